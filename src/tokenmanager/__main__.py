from tokenmanager.cli.main import main

main()
