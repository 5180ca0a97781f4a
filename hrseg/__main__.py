from hrseg.cli.main import main

main()
