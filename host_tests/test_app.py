# bms.app on the virtual board: what the runtime does with persisted state at boot.
import sys

sys.path.append("boards/sim")

import board  # noqa: E402
from simlib import Simulator  # noqa: E402

from bms import events as ev  # noqa: E402
from bms.app import Bms  # noqa: E402
from bms.store import Store  # noqa: E402


def _fresh(path):
    import os

    for d in ("build", "build/sim", path):
        try:
            os.mkdir(d)
        except OSError:
            pass
    for fn in os.listdir(path):
        os.remove(path + "/" + fn)


def _hw(path):
    board.configure(chemistry="lfp", cells=4, capacity_mah=100000)
    hw = board.open(Simulator(cells=4, shunt_uohm=board.SHUNT_UOHM))
    hw.data_dir = path
    return hw


def test_saved_config_is_used_and_one_for_another_pack_is_not():
    path = "build/sim/flash-test-app"
    _fresh(path)
    b = Bms(_hw(path))
    b.cfg.set("imbalance_warn_mv", 80)
    b.save_config(0)
    assert Bms(_hw(path)).cfg.imbalance_warn_mv == 80  # kept across a reboot
    other = b.cfg.as_dict()
    other["cells"] = 5  # saved by a 5-cell build of the board file
    Store(path).save("config", other)
    b2 = Bms(_hw(path))
    assert b2.cfg.cells == 4 and b2.cfg.imbalance_warn_mv != 80  # board defaults instead
    assert [e for e in b2.events.to_list() if e[1] == ev.EV_STORE and e[3] == 4]
