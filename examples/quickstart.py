"""`segzoo quickstart` as a script: `python examples/quickstart.py --help` lists its flags (the same as `segzoo quickstart --help`)."""

from segzoo.cli import command_main

main = command_main("quickstart")

if __name__ == "__main__":
    main()
