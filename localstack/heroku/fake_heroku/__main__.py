"""python3 -m fake_heroku: runs the fake (see the package docstring for the arguments)."""

from .server import main

main()
