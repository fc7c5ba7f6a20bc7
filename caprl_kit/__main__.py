from caprl_kit.cli import main

main()
