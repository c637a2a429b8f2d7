"""`segzoo augment` as a script: `python examples/augment.py --help` lists its flags (the same as `segzoo augment --help`)."""

from segzoo.cli import command_main

main = command_main("augment")

if __name__ == "__main__":
    main()
