"""`python -m gristmill`: the gristmill command, through its light entry (`gristmill.warm.main`)."""

from gristmill.warm import main

main()
