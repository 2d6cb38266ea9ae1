"""``python -m vmresize.agent`` / ``vmresize-agent``: run the agent (see ``main``)."""

from vmresize.agent.main import main

if __name__ == "__main__":
    main()
