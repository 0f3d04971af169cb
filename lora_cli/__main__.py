from lora_cli.cli import main

main()
