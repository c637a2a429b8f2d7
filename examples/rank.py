"""`segzoo rank` as a script: `python examples/rank.py --help` lists its flags (the same as `segzoo rank --help`)."""

from segzoo.cli import command_main

main = command_main("rank")

if __name__ == "__main__":
    main()
