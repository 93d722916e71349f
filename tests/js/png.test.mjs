// Unit tests of the browser test's PNG decoder and blank-screen check (tests/browser/png.mjs).
// Run: node --test tests/js/
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { deflateSync } from "node:zlib";

import { decodePng, imageStats, looksLikeContent } from "../browser/png.mjs";

function crcTable() {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
}
const CRC = crcTable();
function crc32(buf) {
  let c = 0xffffffff;
  for (const b of buf) c = CRC[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function chunk(type, data) {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type, "latin1"), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}

/** Encodes RGB pixels, using PNG filter type (y % 5) on row y to exercise every filter. */
function encodeRgb(width, height, pixel) {
  const bpp = 3;
  const rows = [];
  let prev = Buffer.alloc(width * bpp);
  for (let y = 0; y < height; y++) {
    const line = Buffer.alloc(width * bpp);
    for (let x = 0; x < width; x++) line.set(pixel(x, y), x * bpp);
    const filter = y % 5;
    const out = Buffer.alloc(line.length);
    for (let i = 0; i < line.length; i++) {
      const a = i >= bpp ? line[i - bpp] : 0;
      const b = prev[i];
      const c = i >= bpp ? prev[i - bpp] : 0;
      let pred = 0;
      if (filter === 1) pred = a;
      else if (filter === 2) pred = b;
      else if (filter === 3) pred = (a + b) >> 1;
      else if (filter === 4) {
        const p = a + b - c;
        const pa = Math.abs(p - a);
        const pb = Math.abs(p - b);
        const pc = Math.abs(p - c);
        pred = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      out[i] = (line[i] - pred) & 0xff;
    }
    rows.push(Buffer.from([filter]), out);
    prev = line;
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8;
  ihdr[9] = 2;
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", ihdr),
    chunk("IDAT", deflateSync(Buffer.concat(rows))),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

describe("PNG decoder", () => {
  it("round-trips every filter type", () => {
    const pixel = (x, y) => [(x * 37 + y) & 255, (y * 53) & 255, (x * y) & 255];
    const { width, height, rgba } = decodePng(encodeRgb(17, 11, pixel));
    assert.equal(width, 17);
    assert.equal(height, 11);
    for (let y = 0; y < 11; y++) {
      for (let x = 0; x < 17; x++) {
        const i = (y * 17 + x) * 4;
        assert.deepEqual([...rgba.subarray(i, i + 4)], [...pixel(x, y), 255], `pixel ${x},${y}`);
      }
    }
  });

  it("rejects what is not a PNG", () => {
    assert.throws(() => decodePng(Buffer.from("hello world, not a png")), /not a PNG/);
  });
});

describe("blank-screen check", () => {
  it("a uniform screen is not content, a desktop-like image is", () => {
    const blank = decodePng(encodeRgb(64, 48, () => [40, 40, 40]));
    assert.equal(looksLikeContent(imageStats(blank.rgba)), false);
    const desktop = decodePng(
      encodeRgb(64, 48, (x, y) => (x > 8 && x < 40 && y > 8 && y < 30 ? [250, 246, 227] : [43, 91, 132])),
    );
    const withText = decodePng(
      encodeRgb(64, 48, (x, y) => {
        if (x > 8 && x < 40 && y > 8 && y < 30) return (x + y) % 4 === 0 ? [7, 54, 66] : [250, 246, 227];
        return y < 4 ? [16, 36, 63] : [43, 91, 132];
      }),
    );
    assert.equal(looksLikeContent(imageStats(desktop.rgba)), false, "two flat colours only");
    assert.equal(looksLikeContent(imageStats(withText.rgba)), true);
  });
});
