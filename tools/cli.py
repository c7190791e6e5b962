"""tools/cli.py: what the CPython host tools share on the command line.

Parser: argparse, but a mistake on the command line is ONE line on stderr ("prog: what is
wrong (--help shows the options)") and exit status 2, never the usage block or a traceback.
fail(prog, text, code): print "prog: text" on stderr and exit with code.
"""
import argparse
import sys


class Parser(argparse.ArgumentParser):
    def error(self, message):
        sys.stderr.write("%s: %s (--help shows the options)\n" % (self.prog, message))
        sys.exit(2)


def fail(prog, text, code=2):
    sys.stderr.write("%s: %s\n" % (prog, text))
    sys.exit(code)
