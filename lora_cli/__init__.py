"""lora: reproduce, measure and extend the classic LoRA demonstrations."""

__version__ = "0.1.0"
