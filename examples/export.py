"""`segzoo export` as a script: `python examples/export.py --help` lists its flags (the same as `segzoo export --help`)."""

from segzoo.cli import command_main

main = command_main("export")

if __name__ == "__main__":
    main()
