#!/usr/bin/env python3
"""Generate the wiring diagrams docs/wiring-<board>.svg from the board files (CPython, schemdraw).

    python tools/gen_wiring.py            write docs/wiring-rp2_pico.svg, -esp32_devkit.svg
    python tools/gen_wiring.py --check    exit 1 when a diagram is out of date
    python tools/gen_wiring.py --png DIR  also PNG copies (matplotlib) to look at

The pins, the AFE variant, the cell count, the shunt and the thermistors come from
boards/<name>/board.py (tools/boardfile.py reads them), so a diagram cannot drift from its
board: change the board file, run `make wiring`. The drawing is a wiring overview (what
connects to what, with the GPIO numbers), not a full schematic: the AFE's support parts
(cell-input RC filters, CAP1..3, REGSRC transistor, FET gate resistors) are in the
BQ769x0 datasheet's reference design and named in docs/build-your-pack.md.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import boardfile  # noqa: E402

BOARDS = {"rp2_pico": ("Raspberry Pi Pico (RP2040)", "GP%d", "VSYS (5 V in)"),
          "esp32_devkit": ("ESP32 DevKitC", "GPIO%d", "5V (in)")}


def _out_path(name):
    return os.path.join(ROOT, "docs", "wiring-%s.svg" % name)


def drawing(name, backend="svg"):
    import schemdraw
    import schemdraw.elements as elm

    schemdraw.use(backend)
    if backend == "svg":
        schemdraw.svgconfig.text = "text"
    c = boardfile.read_constants(os.path.join(ROOT, "boards", name, "board.py"))
    title, gp, vin = BOARDS[name]
    n = c["CELLS"]
    variant = c["AFE_VARIANT"].upper()
    shunt_mohm = c["SHUNT_UOHM"] / 1000.0

    def g(key):
        v = c.get(key)
        return (gp % v) if isinstance(v, int) else "-"

    d = schemdraw.Drawing(show=False, fontsize=11, unit=2.5)
    d.config(font="sans-serif")

    def ic(pins_by_side, **kw):
        """An Ic whose pins are listed top to bottom (schemdraw counts left/right upwards)."""
        pins = []
        for side, names in pins_by_side:
            seq = list(reversed(names)) if side in ("left", "right") else names
            for label, anchor in seq:
                pins.append(elm.IcPin(name=label, side=side, anchorname=anchor))
        return elm.Ic(pins=pins, pinspacing=1.0, edgepadH=0.7, edgepadW=0.7, lblsize=10,
                      **kw).right()

    def placed(make, anchor, target):
        """make() placed so that its anchor lands on target (measured in a scratch drawing)."""
        scratch = schemdraw.Drawing(show=False)
        e = make().at((0, 0))
        scratch += e
        a = getattr(e, anchor)
        return make().at((target[0] - a[0], target[1] - a[1]))

    d += elm.Label().at((-1, 14.6)).label(
        "%s + %s: wiring overview (generated from boards/%s/board.py)" % (title, variant, name),
        loc="right", fontsize=15)

    # --- AFE ---------------------------------------------------------------------------
    def afe_ic():
        pins = [elm.IcPin(name="VC%d" % n, side="left", anchorname="VCN", pos=0.92),
                elm.IcPin(name="VC...", side="left", anchorname="VCX", pos=0.5),
                elm.IcPin(name="VC1", side="left", anchorname="VC1", pos=0.2),
                elm.IcPin(name="VC0", side="left", anchorname="VC0", pos=0.08)]
        for i, (label, anchor) in enumerate((("SDA", "SDA"), ("SCL", "SCL"),
                                              ("ALERT", "ALERT"), ("TS1", "TS1"),
                                              ("VSS", "VSS"))):
            pins.append(elm.IcPin(name=label, side="right", anchorname=anchor,
                                  pos=0.85 - 0.125 * i))
        for label, pos in (("SRP", 0.08), ("SRN", 0.36), ("DSG", 0.62), ("CHG", 0.9)):
            pins.append(elm.IcPin(name=label, side="bottom", anchorname=label, pos=pos))
        return elm.Ic(pins=pins, size=(9, 8), lblsize=10).right().label(
            "%s  (0x%02X%s)" % (variant, c["AFE_ADDRESS"], ", CRC" if c["AFE_CRC"] else ""),
            loc="top", fontsize=12)

    d += (afe := afe_ic().at((5, 1)))
    y_low, y_top = afe.VC0[1], afe.VCN[1]

    # --- power path: cells (B- at VC0, B+ at VC<n>), fuse, shunt, FETs --------------------
    d += (b1 := elm.BatteryCell().up().at((0, y_low)).label("cell 1", loc="bottom"))
    d += elm.Line().up().length(0.5)
    d += elm.DotDotDot().up()
    d += (bn := elm.BatteryCell().up().at((0, y_top - 2.5)).label("cell %d" % n, loc="bottom"))
    d += elm.Line().at(b1.end).to((0, b1.end[1] + 0.5))
    d += elm.Dot().at(b1.start).label("B-", loc="left")
    d += elm.Dot().at(bn.end).label("B+", loc="left")
    d += elm.Line().at((0, b1.end[1] + 2.1)).to(bn.start)
    d += elm.Line().at(afe.VCN).to(bn.end).linestyle("--")
    d += elm.Line().at(afe.VC0).to(b1.start).linestyle("--")
    d += elm.Label().at((0.5, (y_low + y_top) / 2 + 0.6)).label(
        "cell taps: VCk to the top\nof cell k, each through\nan RC filter (datasheet)",
        fontsize=8, loc="right")
    d += elm.Line().up().at(bn.end).toy(y_top + 3.5)
    d += elm.Fuse().right().label("fuse (DC, pack-rated)")
    d += elm.Line().right().tox(33)
    d += elm.Dot(open=True).label("P+ (to the inverter)", loc="right")
    y_neg = y_low - 4.5
    d += elm.Line().down().at(b1.start).toy(y_neg)
    d += elm.Line().right().tox(afe.SRP[0])
    d += (sh := elm.Resistor().to((afe.SRN[0], y_neg)).label("shunt %g mΩ" % shunt_mohm,
                                                              loc="bottom"))
    d += elm.Line().right().tox(afe.DSG[0] - 1)
    d += elm.Switch().to((afe.DSG[0] + 1, y_neg)).label("DSG FET(s)", loc="bottom")
    d += elm.Line().right().tox(afe.CHG[0] - 1)
    d += elm.Switch().to((afe.CHG[0] + 1, y_neg)).label("CHG FET(s)", loc="bottom")
    d += elm.Line().right().tox(33)
    d += elm.Dot(open=True).label("P- (to the inverter)", loc="right")
    d += elm.Line().at(afe.SRP).to(sh.start).linestyle("--")
    d += elm.Line().at(afe.SRN).to(sh.end).linestyle("--")
    d += elm.Line().at(afe.DSG).to((afe.DSG[0], y_neg + 0.4)).linestyle(":")
    d += elm.Line().at(afe.CHG).to((afe.CHG[0], y_neg + 0.4)).linestyle(":")
    d += elm.Label().at((afe.SRP[0], y_neg - 1.6)).label(
        "SRP/SRN: Kelvin sense of the shunt; DSG/CHG: gates of N-MOSFETs in the pack's negative "
        "lead, back to back", fontsize=9, loc="right")
    temps = ["TS%d" % (i + 1) for i in range(c["N_TEMPS"])]
    d += elm.Label().at((afe.VCN[0], y_top + 2.4)).label(
        "%s: 10 kΩ NTC, β %d, on the cells%s" % (
            ", ".join(temps), c["THERMISTOR_BETA"],
            " (TS2/TS3 return to VC5x/VC10x)" if len(temps) > 1 else ""),
        fontsize=9, loc="right")

    # --- MCU: its left pins in line with the AFE's right pins ----------------------------
    right = [("%s SCK" % g("CAN_SCK"), "SCK"), ("%s MOSI" % g("CAN_MOSI"), "MOSI"),
             ("%s MISO" % g("CAN_MISO"), "MISO"), ("%s CS" % g("CAN_CS"), "CS"),
             ("%s INT" % g("CAN_INT"), "INT"), ("%s UART TX" % g("UART_TX"), "TX"),
             ("%s UART RX" % g("UART_RX"), "RX"), ("%s DE, /RE" % g("RS485_DE"), "DE"),
             ("%s heater" % g("HEATER_PIN"), "HEAT"), ("%s fan" % g("FAN_PIN"), "FAN")]
    d += (mcu := placed(lambda: ic([
        ("left", [("%s I2C SDA" % g("I2C_SDA"), "SDA"), ("%s I2C SCL" % g("I2C_SCL"), "SCL"),
                  ("%s ALERT" % g("ALERT_PIN"), "ALERT"), ("%s BOOT" % g("BOOT_PIN"), "BOOT"),
                  ("GND", "GND")]),
        ("right", right),
        ("bottom", [(vin, "VIN")]),
    ], size=(7, 11)).label(title, loc="top", fontsize=12), "SDA", (afe.SDA[0] + 6, afe.SDA[1])))
    for a, b, text in (("SDA", "SDA", "4.7 kΩ pull-ups to REGOUT"), ("SCL", "SCL", ""),
                       ("ALERT", "ALERT", "4.7 kΩ"), ("TS1", "BOOT", "wake pulse"),
                       ("VSS", "GND", "ground = B-")):
        d += elm.Wire("-|-", k=2).at(getattr(afe, a)).to(getattr(mcu, b)).label(
            text, fontsize=8, loc="top")

    # --- CAN and RS485, pins in line with the MCU's ---------------------------------------
    d += (can := placed(lambda: ic([
        ("left", [("SCK", "SCK"), ("SI", "MOSI"), ("SO", "MISO"), ("CS", "CS"), ("INT", "INT")]),
        ("right", [("CANH", "CANH"), ("CANL", "CANL")]),
    ], size=(3, 5)).label("MCP2515 + TJA1050\n%d MHz crystal" % (
        c["CAN_CRYSTAL_HZ"] // 1000000), loc="top", fontsize=10), "SCK",
        (mcu.SCK[0] + 4, mcu.SCK[1])))
    for a in ("SCK", "MOSI", "MISO", "CS", "INT"):
        d += elm.Line().at(getattr(mcu, a)).to(getattr(can, a))
    d += elm.Line().right().at(can.CANH).length(1.2).label("CAN-H", loc="right")
    d += elm.Line().right().at(can.CANL).length(1.2).label(
        "CAN-L  %d kbit/s to the inverter" % (c["CAN_BITRATE"] // 1000), loc="right")
    d += (rs := placed(lambda: ic([
        ("left", [("DI", "TX"), ("RO", "RX"), ("DE, /RE", "DE")]),
        ("right", [("A", "A"), ("B", "B")]),
    ], size=(3, 3)).label("RS485, 3.3 V\n(MAX3485)", loc="bottom", fontsize=10), "TX",
        (mcu.TX[0] + 4, mcu.TX[1])))
    for a in ("TX", "RX", "DE"):
        d += elm.Line().at(getattr(mcu, a)).to(getattr(rs, a))
    d += elm.Line().right().at(rs.A).length(1.2).label("A", loc="right")
    d += elm.Line().right().at(rs.B).length(1.2).label(
        "B  Modbus RTU %d 8N1 (EMS)" % c["MODBUS_BAUD"], loc="right")
    d += elm.Line().right().at(mcu.HEAT).length(1.2).label("relay / MOSFET", loc="right",
                                                           fontsize=9)
    d += elm.Line().right().at(mcu.FAN).length(1.2).label("relay / MOSFET", loc="right",
                                                          fontsize=9)
    d += elm.Line().down().at(mcu.VIN).length(0.8)
    d += elm.Line().right().length(0.8)
    d += elm.Label().label(
        "5 V from a DC-DC converter on the pack (after the fuse), its minus at B-;\n"
        "isolate CAN/RS485 when the inverter's ground is not B-", fontsize=9, loc="right")
    return d


def render(name):
    import tempfile

    d = drawing(name)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "w.svg")
        d.save(path)
        with open(path) as f:
            return f.read()


def main(argv):
    check = "--check" in argv
    png_dir = None
    if "--png" in argv:
        k = argv.index("--png")
        if k + 1 >= len(argv):
            sys.stderr.write("gen_wiring.py: --png needs a folder\n")
            return 2
        png_dir = argv[k + 1]
    bad = [a for a in argv if a.startswith("-") and a not in ("--check", "--png")]
    if bad:
        sys.stderr.write("gen_wiring.py: unknown option %s (--check, --png DIR)\n" % bad[0])
        return 2
    stale = []
    for name in BOARDS:
        text = render(name)
        path = _out_path(name)
        try:
            with open(path) as f:
                cur = f.read()
        except OSError:
            cur = None
        if cur != text:
            stale.append(path)
            if not check:
                with open(path, "w") as f:
                    f.write(text)
                print("wrote %s" % os.path.relpath(path, ROOT))
        if png_dir:
            os.makedirs(png_dir, exist_ok=True)
            drawing(name, backend="matplotlib").save(os.path.join(png_dir, name + ".png"),
                                                     dpi=90)
    if check:
        for p in stale:
            print("out of date: %s (run make wiring)" % os.path.relpath(p, ROOT))
        return 1 if stale else 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
