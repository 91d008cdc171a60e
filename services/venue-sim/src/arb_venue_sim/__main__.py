"""``python -m arb_venue_sim``: the venue simulator (control API + simulated venues)."""

from .app import main

if __name__ == "__main__":
    main()
