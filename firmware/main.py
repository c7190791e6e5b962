# Entry point on the board. Everything lives in the bms package; the board definition
# (boards/<name>/board.py, copied as lib/board.mpy) provides the hardware.
import bms.app

bms.app.main()
