// tools/rp2emu/flash.mjs: the QSPI NOR flash behind the emulated Pico's boot ROM.
//
// rp2040js 1.4 serves XIP reads from its flash array but has no write path (its SSI model
// ignores the program/erase commands, upstream issue wokwi/rp2040js#157), so littlefs on
// MicroPython could never write. The runner replaces the boot ROM's flash_range_erase and
// flash_range_program (looked up through the ROM function table, as the SDK does) with a trap
// into this model, which acts like a W25Q16 NOR flash:
//   erase(offset, count)    whole 4 KiB sectors to 0xFF; offset and count sector-aligned
//   program(offset, bytes)  AND into the array (NOR: a program only clears bits)
// Each call returns the busy time of the chip in ns (typical W25Q16JV: 45 ms per sector
// erase, 0.4 ms per page program), which the runner adds to the stalled CPU's clock.
// A misaligned or out-of-range request changes nothing and is counted in `errors`.
//
//   node tools/rp2emu/flash.mjs apply IMAGE OPS.json   host check (tests): apply
//       [["erase", offset, count], ["program", offset, "hex"], ...] to the 2 MiB IMAGE in
//       place and print the statistics as JSON.

export const SECTOR = 4096;
export const PAGE = 256;
export const ERASE_NS = 45e6;
export const PAGE_NS = 0.4e6;

export class FlashModel {
  constructor(array, size = 2 * 1024 * 1024) {
    this.mem = array; // Uint8Array of the emulator's flash (may be larger than the chip)
    this.size = size; // the chip: 2 MiB on a Pico
    this.erases = 0; // sectors erased
    this.pages = 0; // pages programmed
    this.bytes = 0; // bytes programmed
    this.errors = 0;
    this.dirty = false;
  }

  erase(offset, count) {
    if (offset % SECTOR || count % SECTOR || offset < 0 || offset + count > this.size) {
      this.errors++;
      return 0;
    }
    this.mem.fill(0xff, offset, offset + count);
    this.erases += count / SECTOR;
    this.dirty = true;
    return (count / SECTOR) * ERASE_NS;
  }

  program(offset, data) {
    const n = data.length;
    if (offset < 0 || offset + n > this.size) {
      this.errors++;
      return 0;
    }
    const mem = this.mem;
    for (let i = 0; i < n; i++) {
      mem[offset + i] &= data[i];
    }
    const first = Math.floor(offset / PAGE);
    const last = Math.floor((offset + n - 1) / PAGE);
    const pages = n ? last - first + 1 : 0;
    this.pages += pages;
    this.bytes += n;
    this.dirty = true;
    return pages * PAGE_NS;
  }

  stats() {
    return { erases: this.erases, pages: this.pages, bytes: this.bytes, errors: this.errors };
  }
}

async function main(argv) {
  const fs = await import('fs');
  if (argv[0] !== 'apply' || argv.length !== 3) {
    console.error('usage: node flash.mjs apply IMAGE OPS.json');
    return 2;
  }
  const img = new Uint8Array(fs.readFileSync(argv[1]));
  const ops = JSON.parse(fs.readFileSync(argv[2], 'utf8'));
  const model = new FlashModel(img, img.length);
  let busyNs = 0;
  for (const [op, offset, arg] of ops) {
    if (op === 'erase') {
      busyNs += model.erase(offset, arg);
    } else if (op === 'program') {
      busyNs += model.program(offset, Uint8Array.from(Buffer.from(arg, 'hex')));
    } else {
      console.error(`unknown operation ${op}`);
      return 2;
    }
  }
  fs.writeFileSync(argv[1], img);
  console.log(JSON.stringify({ ...model.stats(), busy_ms: busyNs / 1e6 }));
  return 0;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main(process.argv.slice(2)).then((rc) => process.exit(rc));
}
