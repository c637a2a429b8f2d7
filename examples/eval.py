"""`segzoo eval` as a script: `python examples/eval.py --help` lists its flags (the same as `segzoo eval --help`)."""

from segzoo.cli import command_main

main = command_main("eval")

if __name__ == "__main__":
    main()
