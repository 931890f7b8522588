from sandcastle.cli.main import main

main()
