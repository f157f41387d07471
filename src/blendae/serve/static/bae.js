// bae.js: decode blendae's .bae files in the browser, bit for bit as the Python decoder does.
//
//   import { loadModel, decode } from "./bae.js";
//   const q3 = await loadModel("/models/q3.json");          // NAME.json + NAME.safetensors
//   const image = decode(new Uint8Array(bytes), [q3]);       // ImageData (or {width, height, data})
//
// No dependencies. What makes it exact (docs/format.md has the byte-level details):
// - the container: versions 1 and 2 (magic, version, model id, channels, version 2's quality,
//   LEB128 sizes, CRC-32) and version 3 (2 bytes of the id, a gray flag with the quality, a
//   square flag with the height, CRC-16 over the file and the whole model id) and version 4
//   (version 3 plus the side of the patches a larger image was coded in, in units of 16
//   pixels: the patches share one ANS stream, each stage of every patch before the next);
// - constriction's ANS decoder (32-bit words, 64-bit state, 24-bit probabilities), with its
//   `Categorical(p, perfect=False)` fixed-point quantization and `Uniform(n)`;
// - the integer-exact networks of models/exact.py: integer activations and weights, so every
//   convolution sum is an exact integer (plain float64 sums are exact); every other step is
//   one correctly rounded float32 operation, reproduced with Math.fround (a float64 result of
//   +, -, ×, ÷ or √ on float32 values, rounded to float32, is the float32 result); GDN's
//   squares are summed in float64 as torch does;
// - the variable-rate "gained" model (the general model): its files name a
//   quality, and the decoded latent is multiplied by the stored float32 row
//   inv_gain_table[quality] (one Math.fround multiply) before the synthesis.
// Speed: the sums run in a small WebAssembly SIMD kernel assembled below (JavaScript where
// the browser lacks it): about 4 ms for a 32×32 image.

export const MAX_PIXELS = 1 << 22; // blendae's size limit (2048×2048), for writing and reading
const MAX_SIDE = 65535;
const VERSION = 1; // fixed-rate models' files
const VERSION_QUALITY = 2; // variable-rate models' files: a quality byte after the channels
const VERSION_COMPACT = 3; // every model's files since blendae 0.8 (docs/format.md)
const VERSION_PATCHES = 4; // since 0.9, an image coded in patches: version 3 + the patch side
const PATCH_UNIT = 16;
const MAX_PATCH = 256;
const NO_QUALITY = 127; // version 3's quality field of a fixed-rate model's file
const CHECKSUM_MISMATCH = "corrupt or truncated .bae file: checksum mismatch";
const MAX_QUALITY = 100;
const PRECISION = 24; // bits of every coder probability
const ACT_LIMIT = 2047; // 12-bit activations
const GAMMA_LIMIT = 4095;
const HEADROOM = 2.0;
const ESCAPE_BITS = 17;
const SIGN_CHUNK = 24;
const STRIDE = 16; // the hyperprior models pad images to multiples of 16
const TWO32 = 4294967296;
// Convolutions sum both weight digits in one float64: w = high·2^26 + low. Each digit's sum is
// an integer below 2^24, so the combined sum is exact and splits back without error.
const SPLIT = 2 ** 26;
const INV_SPLIT = 2 ** -26;
// x + ROUNDER − ROUNDER rounds x (|x| < 2^51) to an integer, half to even like torch.round
const ROUNDER = 2 ** 52 + 2 ** 51;

/** A malformed file, a file from a model that is not loaded, or a damaged model file. */
export class BaeError extends Error {
  constructor(message) {
    super(message);
    this.name = "BaeError";
  }
}

const fround = Math.fround;

/** Round half to even, as torch.round does. */
function rint(x) {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

// ---- CRC-32 (zlib's) ----------------------------------------------------------------------
const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

// CRC-16/XMODEM (polynomial 0x1021, no reflection, initial value 0): Python's crc_hqx
const CRC16_TABLE = (() => {
  const table = new Uint16Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n << 8;
    for (let k = 0; k < 8; k++) c = c & 0x8000 ? ((c << 1) ^ 0x1021) & 0xffff : (c << 1) & 0xffff;
    table[n] = c;
  }
  return table;
})();

function crc16(bytes, crc = 0) {
  for (let i = 0; i < bytes.length; i++) crc = (CRC16_TABLE[((crc >>> 8) ^ bytes[i]) & 0xff] ^ (crc << 8)) & 0xffff;
  return crc;
}

function crc32(bytes, crc = 0) {
  let c = ~crc >>> 0;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

// ---- the container ------------------------------------------------------------------------
function readVarint(data, pos, what) {
  let value = 0;
  for (let i = 0; i < 3; i++) {
    if (pos + i >= data.length) throw new BaeError(`truncated .bae file: it ends inside the ${what} field`);
    const byte = data[pos + i];
    value |= (byte & 0x7f) << (7 * i);
    if (!(byte & 0x80)) {
      if (i > 0 && byte === 0) throw new BaeError(`corrupt .bae header: non-canonical ${what} field`);
      return [value, pos + i + 1];
    }
  }
  throw new BaeError(`corrupt .bae header: ${what} field longer than 3 bytes`);
}

const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

/** File bytes → {modelId (hex: 4 bytes, or 2 in a version 3 file), channels, quality (0..100,
 * or null for a fixed-rate model's file), height, width, payload, checksum (version 3:
 * [stored, CRC-16 so far], finished with the model's id by `madeBy`)}; checks as blendae does. */
export function parseHeader(data) {
  if (data instanceof ArrayBuffer) data = new Uint8Array(data);
  if (!(data instanceof Uint8Array)) {
    throw new BaeError("decode expects the file as a Uint8Array or an ArrayBuffer");
  }
  if (data.length < 3) throw new BaeError(`not a .bae file: only ${data.length} bytes`);
  if (data[0] !== 0xba || data[1] !== 0xe1) {
    throw new BaeError(`not a .bae file: starts with ${hex(data.subarray(0, 2))} instead of bae1`);
  }
  const version = data[2];
  if (version < VERSION || version > VERSION_PATCHES) {
    throw new BaeError(`.bae format version ${version} is not supported: this decoder reads ` +
      `versions 1 to ${VERSION_PATCHES}`);
  }
  const header = version >= VERSION_COMPACT
    ? parseCompact(data, version === VERSION_PATCHES)
    : parseLong(data, version);
  const { channels, quality, height, width } = header;
  if (channels !== 1 && channels !== 3) {
    throw new BaeError(`corrupt .bae header: ${channels} channels (expected 1 or 3)`);
  }
  if (!(height >= 1 && height <= MAX_SIDE && width >= 1 && width <= MAX_SIDE)) {
    throw new BaeError(`corrupt .bae header: image size ${height}x${width}`);
  }
  if (quality !== null && quality > MAX_QUALITY) {
    throw new BaeError(`corrupt .bae header: quality ${quality} (expected 0..100)`);
  }
  if (height * width > MAX_PIXELS) {
    throw new BaeError(`image size ${width}x${height} (width x height) is not supported: ` +
      `at most ${MAX_PIXELS} pixels in all (2048x2048)`);
  }
  return header;
}

/** Versions 1 and 2: a 4-byte id, a channels byte, (2: a quality byte), two sizes, CRC-32. */
function parseLong(data, version) {
  let pos = version === VERSION_QUALITY ? 9 : 8;
  if (data.length < pos) throw new BaeError("truncated .bae file: it ends inside the header");
  const modelId = hex(data.subarray(3, 7));
  const channels = data[7];
  const quality = version === VERSION_QUALITY ? data[8] : null;
  let height, width;
  [height, pos] = readVarint(data, pos, "height");
  [width, pos] = readVarint(data, pos, "width");
  if (data.length < pos + 4) throw new BaeError("truncated .bae file: it ends inside the checksum");
  const stored = (data[pos] | (data[pos + 1] << 8) | (data[pos + 2] << 16) | (data[pos + 3] << 24)) >>> 0;
  const payload = data.subarray(pos + 4);
  if (crc32(payload, crc32(data.subarray(0, pos))) !== stored) throw new BaeError(CHECKSUM_MISMATCH);
  return { modelId, channels, quality, height, width, patch: null, payload, checksum: null };
}

/** Version 3: 2 bytes of the id, one image byte (gray flag, quality), the size, CRC-16;
 * version 4 (`patched`): the patch side's byte before the CRC. */
function parseCompact(data, patched) {
  let pos = 6;
  if (data.length < pos) throw new BaeError("truncated .bae file: it ends inside the header");
  const modelId = hex(data.subarray(3, 5));
  const image = data[5];
  let size, height, width;
  [size, pos] = readVarint(data, pos, "size");
  height = width = Math.floor(size / 2);
  if (!(size & 1)) {
    [width, pos] = readVarint(data, pos, "width");
    if (width === height) throw new BaeError("corrupt .bae header: a square image's width stored");
  }
  let patch = null;
  if (patched) {
    if (data.length <= pos) throw new BaeError("truncated .bae file: it ends inside the patch field");
    patch = data[pos++] * PATCH_UNIT;
    if (!(patch > 0 && patch <= MAX_PATCH) || !(height > patch || width > patch)) {
      throw new BaeError(`corrupt .bae header: ${height}x${width} image in patches of side ${patch} ` +
        `(a side 16..${MAX_PATCH}, smaller than the image)`);
    }
  }
  if (data.length < pos + 2) throw new BaeError("truncated .bae file: it ends inside the checksum");
  const stored = data[pos] | (data[pos + 1] << 8);
  const payload = data.subarray(pos + 2);
  const partial = crc16(payload, crc16(data.subarray(0, pos)));
  const q = image & 0x7f;
  const quality = q === NO_QUALITY ? null : q;
  const channels = image & 0x80 ? 1 : 3;
  return { modelId, channels, quality, height, width, patch, payload, checksum: [stored, partial] };
}

/** Whether the model with (hex) id `id` wrote the parsed file: the id starts alike and a
 * version 3 file's CRC-16, finished with the whole id, holds. */
function madeBy(header, id) {
  if (!id.startsWith(header.modelId)) return false;
  if (header.checksum === null) return true;
  const [stored, partial] = header.checksum;
  const bytes = Uint8Array.from(id.match(/../g), (b) => parseInt(b, 16));
  return crc16(bytes, partial) === stored;
}

// ---- constriction's ANS decoder -----------------------------------------------------------
// The state (64 bits) is two uint32 halves; a pop takes the low 24 bits as the quantile and
// leaves (state >> 24) · probability + (quantile − left cumulative), refilled from the words'
// end (a stack) whenever it drops below 2^32.
class AnsDecoder {
  constructor(payload) {
    const n = Math.ceil(payload.length / 4); // zero-padded to whole little-endian words
    const padded = new Uint8Array(n * 4);
    padded.set(payload);
    const view = new DataView(padded.buffer);
    this.words = new Uint32Array(n);
    for (let i = 0; i < n; i++) this.words[i] = view.getUint32(4 * i, true);
    this.pos = n;
    this.hi = 0;
    this.lo = 0;
    if (n) {
      const top = this.words[--this.pos];
      if (top === 0) throw new BaeError("corrupt .bae payload: ANS data never ends in a zero word");
      this.lo = top;
      if (this.pos) {
        this.hi = this.lo;
        this.lo = this.words[--this.pos];
      }
    }
  }

  /** Finish a pop: state ← (state >> 24) · probability + remainder, then refill. */
  advance(probability, remainder) {
    const shHi = this.hi >>> 24;
    const shLo = ((this.hi << 8) | (this.lo >>> 24)) >>> 0;
    const t = (shLo & 0xffff) * probability + remainder; // < 2^41: exact
    const u = (shLo >>> 16) * probability; // < 2^40: exact
    const low = (t % TWO32) + (u % 65536) * 65536;
    const lo = low % TWO32;
    const hi = shHi * probability + Math.floor(u / 65536) + Math.floor(t / TWO32) + Math.floor(low / TWO32);
    if (hi === 0 && this.pos > 0) {
      this.hi = lo;
      this.lo = this.words[--this.pos];
    } else {
      this.hi = hi;
      this.lo = lo;
    }
  }

  /** Pop one symbol of a categorical model (a CDF of n + 1 entries ending in 2^24). */
  pop(cdf) {
    const q = this.lo & 0xffffff;
    let lo = 0;
    let hi = cdf.length - 1; // invariant: cdf[lo] <= q < cdf[hi]
    while (hi - lo > 1) {
      const mid = (lo + hi) >>> 1;
      if (cdf[mid] <= q) lo = mid;
      else hi = mid;
    }
    this.advance(cdf[lo + 1] - cdf[lo], q - cdf[lo]);
    return lo;
  }

  /** Pop one value of Uniform(2^bits), 1 <= bits <= 24: the quantile's top bits. */
  popBits(bits) {
    const q = this.lo & 0xffffff;
    const shift = PRECISION - bits;
    const symbol = q >>> shift;
    this.advance(1 << shift, q - (symbol << shift));
    return symbol;
  }

  isEmpty() {
    return this.hi === 0 && this.lo === 0;
  }
}

/** constriction's `Categorical(probabilities, perfect=False)`: the CDF its fast quantization
 * builds from float32 weights, left_cumulative(i) = ⌊cumulative(i) · scale⌋ + i in float32. */
export function categoricalCdf(weights) {
  const n = weights.length;
  if (n < 2) throw new BaeError("damaged model: a probability table has fewer than 2 entries");
  let norm = 0;
  for (let i = 0; i < n; i++) norm = fround(norm + fround(weights[i]));
  if (!(norm > 0) || norm < 2 ** -126 || !Number.isFinite(norm)) {
    throw new BaeError("damaged model: a probability table does not sum to a positive number");
  }
  const scale = fround(fround(2 ** PRECISION - n) / norm);
  const cdf = new Uint32Array(n + 1);
  let cumulative = 0;
  for (let i = 0; i < n; i++) {
    cdf[i] = Math.trunc(fround(cumulative * scale)) + i;
    cumulative = fround(cumulative + fround(weights[i]));
  }
  cdf[n] = 2 ** PRECISION;
  for (let i = 0; i < n; i++) {
    if (cdf[i + 1] <= cdf[i]) throw new BaeError("damaged model: a probability table is not increasing");
  }
  return cdf;
}

/** Integer probabilities p (each >= 1, summing to 2^24) as coded: Categorical(p − 1). */
function tableCdf(pmf) {
  return categoricalCdf(Array.from(pmf, (p) => p - 1));
}

const ESCAPE_CDF = (() => {
  const weights = Array.from({ length: ESCAPE_BITS }, (_, n) => 2 ** (ESCAPE_BITS - n));
  const total = weights.reduce((a, b) => a + b, 0);
  const pmf = weights.map((w) => w * Math.floor(2 ** PRECISION / total));
  pmf[0] += 2 ** PRECISION - pmf.reduce((a, b) => a + b, 0);
  return tableCdf(pmf);
})();

// ---- safetensors --------------------------------------------------------------------------
function halfToDouble(h) {
  const exponent = (h >> 10) & 31;
  const fraction = h & 1023;
  const sign = h & 0x8000 ? -1 : 1;
  if (exponent === 0) return sign * fraction * 2 ** -24;
  if (exponent === 31) return fraction ? NaN : sign * Infinity;
  return sign * (1024 + fraction) * 2 ** (exponent - 25);
}

// safetensors dtype → its bytes, and what torch holds it as once loaded (float16 weights
// become float32 parameters): the model id hashes the latter.
const DTYPES = {
  F16: [2, "torch.float32", 4],
  F32: [4, "torch.float32", 4],
  F64: [8, "torch.float64", 8],
  I32: [4, "torch.int32", 4],
};

/** safetensors bytes → Map name → {dtype, shape, values (Float64Array, exact)}. */
export function readSafetensors(buffer) {
  const bytes = new Uint8Array(buffer);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < 8) throw new BaeError("damaged model: the .safetensors file is too short");
  const headerLength = Number(view.getBigUint64(0, true));
  if (8 + headerLength > bytes.length) {
    throw new BaeError("damaged model: the .safetensors header is truncated");
  }
  let header;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength)));
  } catch {
    throw new BaeError("damaged model: the .safetensors header is not JSON");
  }
  const base = 8 + headerLength;
  const tensors = new Map();
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const [size] = DTYPES[info.dtype] || [];
    const [start, stop] = info.data_offsets;
    const count = info.shape.reduce((a, b) => a * b, 1);
    if (!size || stop - start !== count * size || base + stop > bytes.length) {
      throw new BaeError(`damaged model: tensor ${name} (${info.dtype}) is not readable`);
    }
    const values = new Float64Array(count);
    const at = base + start;
    for (let i = 0; i < count; i++) {
      const o = at + i * size;
      if (info.dtype === "F16") values[i] = halfToDouble(view.getUint16(o, true));
      else if (info.dtype === "F32") values[i] = view.getFloat32(o, true);
      else if (info.dtype === "F64") values[i] = view.getFloat64(o, true);
      else values[i] = view.getInt32(o, true);
    }
    tensors.set(name, { dtype: info.dtype, shape: info.shape, values });
  }
  return tensors;
}

// ---- the exact layers, derived from the float weights (models/exact.py) -------------------
function activationStep(tensors, name) {
  const amax = tensor(tensors, name, []).values[0];
  return Math.max(amax * HEADROOM, 1e-6) / ACT_LIMIT;
}

function tensor(tensors, name, shape) {
  const t = tensors.get(name);
  if (!t || (shape && t.shape.length !== shape.length)) throw new BaeError(`damaged model: no tensor ${name}`);
  return t;
}

/** ExactConv: weights w = B·w₁ + w₀ in two digits, stored combined as w₁·2^26 + w₀, laid out
 * [group of 4 output channels][ky][kx][cin][4] for the kernel in `runConv` (output channels
 * padded with zero weights to a multiple of 4). */
function exactConv(tensors, prefix, amaxName, { shuffle = false, relu = false } = {}) {
  const w = tensor(tensors, `${prefix}.weight`, [0, 0, 0, 0]);
  const [cout, cin, k] = w.shape;
  const fanIn = cin * k * k;
  const digit = Math.floor(2 ** 24 / (fanIn * (ACT_LIMIT + 1)));
  const base = 2 * digit + 1;
  const step = activationStep(tensors, amaxName);
  const groups = Math.ceil(cout / 4);
  const weight = new Float64Array(groups * fanIn * 4);
  const scale = new Float64Array(cout);
  const bias = new Float64Array(cout);
  const b = tensors.get(`${prefix}.bias`);
  for (let o = 0; o < cout; o++) {
    let max = 0;
    for (let i = 0; i < fanIn; i++) max = Math.max(max, Math.abs(w.values[o * fanIn + i]));
    const wstep = Math.max(max, 1e-12) / (digit * (base + 1));
    for (let c = 0; c < cin; c++) {
      for (let t = 0; t < k * k; t++) {
        const level = rint(w.values[o * fanIn + c * k * k + t] / wstep);
        const high = rint(level / base);
        weight[(((o >> 2) * k * k + t) * cin + c) * 4 + (o & 3)] = high * SPLIT + (level - high * base);
      }
    }
    scale[o] = fround(wstep * step);
    bias[o] = b ? fround(b.values[o]) : 0;
  }
  return { kind: "conv", cin, cout, k, groups, base, step: fround(step), weight, scale, bias, shuffle, relu };
}

/** ExactGDN: 12-bit integer γ, squares summed exactly in float64. γ is laid out as the
 * weights of a 1×1 convolution, [group of 4 outputs][input][4] (see `runGdn`). */
function exactGdn(tensors, prefix, amaxName, inverse) {
  const g = tensor(tensors, `${prefix}.gamma_sqrt`, [0, 0]);
  const beta = tensor(tensors, `${prefix}.beta_sqrt`, [0]).values;
  const c = beta.length;
  const step = activationStep(tensors, amaxName);
  const gamma = new Float64Array(Math.ceil(c / 4) * 4 * c);
  const scale = new Float64Array(c);
  const betaF = new Float64Array(c);
  for (let i = 0; i < c; i++) {
    let max = 0;
    for (let j = 0; j < c; j++) max = Math.max(max, g.values[i * c + j] ** 2);
    const gstep = Math.max(max, 1e-12) / GAMMA_LIMIT;
    for (let j = 0; j < c; j++) {
      gamma[((i >> 2) * c + j) * 4 + (i & 3)] = rint(g.values[i * c + j] ** 2 / gstep);
    }
    scale[i] = fround(gstep * step * step);
    betaF[i] = fround(fround(beta[i] * beta[i]) + fround(1e-6)); // float32 β² + 1e-6
  }
  const groups = Math.ceil(c / 4);
  return { kind: "gdn", cin: c, k: 1, groups, weight: gamma, step: fround(step), scale, beta: betaF, inverse };
}

// ---- the exact layers, run (activations height × width × channels, float32 values) --------
/** Quantized activations clamp(round(x / step), ±2047) with a zero border of `pad` pixels
 * and PIXELS pixels of slack, so every tap of every output pixel the kernels compute (those
 * past the row's end included) reads inside the array. */
function quantizePadded(x, step, h, w, c, pad) {
  const pw = w + 2 * pad;
  const a = new Float64Array(((h + 2 * pad) * pw + PIXELS) * c);
  for (let i = 0; i < h; i++) {
    let to = ((i + pad) * pw + pad) * c;
    for (let from = i * w * c, end = (i + 1) * w * c; from < end; from++, to++) {
      const v = fround(x[from] / step); // clamped first (to integers), then rounded: the same
      a[to] = (v > ACT_LIMIT ? ACT_LIMIT : v < -ACT_LIMIT ? -ACT_LIMIT : v) + ROUNDER - ROUNDER;
    }
  }
  return a;
}

/** The exact sums Σ a · weight of a stride-1 "same" convolution, per output pixel and
 * channel (pixel-major, channels padded to groups of 4), in JavaScript: two output pixels ×
 * four channels at a time, their eight sums in locals, so each loaded activation serves four
 * multiply-adds and each loaded weight two. */
function convSums(layer, a, h, w, pw) {
  const { cin, k, weight } = layer;
  const span = k * cin; // one kernel row: contiguous in `a` and in `weight`
  const cout = layer.groups * 4;
  const sums = new Float64Array((h * w + 1) * cout);
  for (let y = 0; y < h; y++) {
    for (let xx = 0; xx < w; xx += 2) {
      for (let g = 0; g < cout; g += 4) {
        let s0 = 0, s1 = 0, s2 = 0, s3 = 0, t0 = 0, t1 = 0, t2 = 0, t3 = 0;
        for (let ky = 0; ky < k; ky++) {
          const ab = ((y + ky) * pw + xx) * cin;
          let wi = (g * k + ky * 4) * span;
          for (let j = ab; j < ab + span; j++, wi += 4) {
            const u = a[j];
            const v = a[j + cin];
            const w0 = weight[wi], w1 = weight[wi + 1], w2 = weight[wi + 2], w3 = weight[wi + 3];
            s0 += u * w0; s1 += u * w1; s2 += u * w2; s3 += u * w3;
            t0 += v * w0; t1 += v * w1; t2 += v * w2; t3 += v * w3;
          }
        }
        const at = (y * w + xx) * cout + g; // the second pixel's sums land one pixel further
        sums[at] = s0; sums[at + 1] = s1; sums[at + 2] = s2; sums[at + 3] = s3;
        sums[at + cout] = t0; sums[at + cout + 1] = t1; sums[at + cout + 2] = t2; sums[at + cout + 3] = t3;
      }
    }
  }
  return sums;
}

// ---- the convolutions' sums in WebAssembly SIMD, where the browser has it ------------------
// The same exact float64 sums as `runConv`'s JavaScript loop (any order gives the same
// integers), two lanes at a time: the module is assembled here, from the instructions below,
// so there is no binary to trust and no build step.
const uleb = (n) => {
  const out = [];
  do {
    let byte = n & 0x7f;
    n >>>= 7;
    if (n) byte |= 0x80;
    out.push(byte);
  } while (n);
  return out;
};
const section = (id, bytes) => [id, ...uleb(bytes.length), ...bytes];

const PIXELS = 4; // output pixels the WebAssembly kernel computes together

/** conv(a, wt, out, h, w, cin, cout, k, pw): for each run of PIXELS output pixels and group of
 * four output channels, Σ a · weight over the kernel window into out[pixel][cout] (float64),
 * 2·PIXELS accumulators of two lanes: each loaded pair of weights serves 2·PIXELS lanes. */
function convModuleBytes() {
  const [A, WT, OUT, H, W, CIN, COUT, K, PW] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  const [Y, X, G, KY, J, AB, WI, SPAN, CIN8, OB] = [9, 10, 11, 12, 13, 14, 15, 16, 17, 18];
  const ACC = Array.from({ length: 2 * PIXELS }, (_, i) => 19 + i); // pixel p: 2p, 2p + 1
  const V = Array.from({ length: PIXELS }, (_, p) => 19 + 2 * PIXELS + p); // its activation
  const [W01, W23] = [19 + 3 * PIXELS, 20 + 3 * PIXELS];
  const OFF = Array.from({ length: PIXELS }, (_, p) => 21 + 3 * PIXELS + p); // p · cin · 8
  const get = (i) => [0x20, i];
  const set = (i) => [0x21, i];
  const i32 = (v) => [0x41, ...uleb(v)]; // only small non-negative constants
  const [add, mul, ge] = [0x6a, 0x6c, 0x4e];
  const simd = (op) => [0xfd, ...uleb(op)];
  const load = (offset) => [...simd(0), 3, ...uleb(offset)];
  const store = (offset) => [...simd(11), 3, ...uleb(offset)];
  const [splat, f64add, f64mul] = [simd(20), simd(240), simd(242)];
  const zero = [...simd(12), ...new Array(16).fill(0)];
  const loop = (counter, limit, body, step) => [
    0x02, 0x40, 0x03, 0x40, // block, loop
    ...get(counter), ...limit, ge, 0x0d, 1, // exit when counter >= limit
    ...body,
    ...get(counter), ...step, add, ...set(counter), 0x0c, 0, // counter += step, again
    0x0b, 0x0b,
  ];
  const madd = (acc, v, w) => [...get(acc), ...get(v), ...get(w), ...f64mul, ...f64add, ...set(acc)];
  const each = (fn) => Array.from({ length: PIXELS }, (_, p) => fn(p)).flat();
  const inner = [
    // pixel p's activation: f64.load at ab + p · cin · 8, in both lanes
    ...each((p) => [...get(AB), ...get(OFF[p]), add, 0x2b, 3, 0, ...splat, ...set(V[p])]),
    ...get(WI), ...load(0), ...set(W01),
    ...get(WI), ...load(16), ...set(W23),
    ...each((p) => [...madd(ACC[2 * p], V[p], W01), ...madd(ACC[2 * p + 1], V[p], W23)]),
    ...get(AB), ...i32(8), add, ...set(AB),
    ...get(WI), ...i32(32), add, ...set(WI),
  ];
  const kernelRow = [
    // ab = a + (((y + ky) * pw + x) * cin) * 8;  wi = wt + ((g * k + ky * 4) * span) * 8
    ...get(Y), ...get(KY), add, ...get(PW), mul, ...get(X), add, ...get(CIN8), mul, ...get(A), add, ...set(AB),
    ...get(G), ...get(K), mul, ...get(KY), ...i32(4), mul, add, ...get(SPAN), mul, ...i32(8), mul,
    ...get(WT), add, ...set(WI),
    ...i32(0), ...set(J),
    ...loop(J, get(SPAN), inner, i32(1)),
  ];
  const group = [
    ...ACC.map((acc) => [...zero, ...set(acc)]).flat(),
    ...i32(0), ...set(KY),
    ...loop(KY, get(K), kernelRow, i32(1)),
    // ob = out + ((y * w + x) * cout + g) * 8; each next pixel's sums one pixel further
    ...get(Y), ...get(W), mul, ...get(X), add, ...get(COUT), mul, ...get(G), add, ...i32(8), mul,
    ...get(OUT), add, ...set(OB),
    ...each((p) => [
      ...get(OB), ...get(ACC[2 * p]), ...store(0), ...get(OB), ...get(ACC[2 * p + 1]), ...store(16),
      ...get(OB), ...get(COUT), ...i32(8), mul, add, ...set(OB),
    ]),
  ];
  const body = [
    ...get(K), ...get(CIN), mul, ...set(SPAN),
    ...get(CIN), ...i32(8), mul, ...set(CIN8),
    ...each((p) => [...get(CIN8), ...i32(p), mul, ...set(OFF[p])]),
    ...i32(0), ...set(Y),
    ...loop(Y, get(H), [
      ...i32(0), ...set(X),
      ...loop(X, get(W), [...i32(0), ...set(G), ...loop(G, get(COUT), group, i32(4))], i32(PIXELS)),
    ], i32(1)),
    0x0b,
  ];
  const locals = [3, 10, 0x7f, 3 * PIXELS + 2, 0x7b, PIXELS, 0x7f]; // i32s, v128s, i32s
  const code = [...uleb(locals.length + body.length), ...locals, ...body];
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, [1, 0x60, 9, ...new Array(9).fill(0x7f), 0]), // type: (i32 × 9) → ()
    ...section(2, [1, 3, ...[0x65, 0x6e, 0x76], 3, ...[0x6d, 0x65, 0x6d], 2, 0, 1]), // env.mem
    ...section(3, [1, 0]),
    ...section(7, [1, 4, ...[0x63, 0x6f, 0x6e, 0x76], 0, 0]), // export "conv"
    ...section(10, [1, ...code]),
  ]);
}

let convModule; // compiled once; null where WebAssembly SIMD is missing

function wasmConvModule() {
  if (convModule === undefined) {
    const bytes = convModuleBytes();
    try {
      const simd = typeof WebAssembly === "object" && WebAssembly.validate(bytes);
      convModule = simd ? new WebAssembly.Module(bytes) : null;
    } catch {
      convModule = null; // e.g. a Content-Security-Policy without 'wasm-unsafe-eval'
    }
  }
  return convModule;
}

/** One model's convolutions (and GDN sums) in WebAssembly: its weights copied into the module's memory
 * once, then per call the activations in and the sums out. */
class WasmConv {
  constructor(layers, module) {
    let end = 0;
    for (const layer of layers) {
      layer.at = end;
      end += layer.weight.byteLength;
    }
    this.memory = new WebAssembly.Memory({ initial: Math.ceil(end / 65536) + 1 });
    this.conv = new WebAssembly.Instance(module, { env: { mem: this.memory } }).exports.conv;
    for (const layer of layers) {
      new Float64Array(this.memory.buffer, layer.at, layer.weight.length).set(layer.weight);
    }
    this.scratch = end;
  }

  sums(layer, a, h, w, pw) {
    const cout = layer.groups * 4;
    const out = this.scratch + a.byteLength;
    const size = (h * w + PIXELS) * cout; // the last run's extra pixels: scratch
    const need = out + size * 8 - this.memory.buffer.byteLength;
    if (need > 0) this.memory.grow(Math.ceil(need / 65536));
    new Float64Array(this.memory.buffer, this.scratch, a.length).set(a);
    this.conv(this.scratch, layer.at, out, h, w, layer.cin, cout, layer.k, pw);
    return new Float64Array(this.memory.buffer, out, size);
  }
}

/** A stride-1 "same" convolution (then PixelShuffle(2) if the layer has it). Each output is
 * ((high · B + low) · scale + bias) in float32 from its exact digit sums, then ReLU. */
function runConv(layer, x, h, w, wasm) {
  const { cin, cout, k, base, scale, bias, relu, shuffle } = layer;
  const pad = (k - 1) >> 1;
  const a = quantizePadded(x, layer.step, h, w, cin, pad);
  const sums = wasm ? wasm.sums(layer, a, h, w, w + 2 * pad) : convSums(layer, a, h, w, w + 2 * pad);
  const stride = layer.groups * 4;
  const out = new Float32Array(h * w * cout);
  const c4 = cout >> 2; // channels after the pixel shuffle
  // PixelShuffle(2): channel 4c + 2i + j of pixel (y, x) goes to (2y + i, 2x + j), channel c
  const target = Int32Array.from({ length: cout }, (_, o) =>
    shuffle ? ((o >> 1) & 1) * 2 * w * c4 + (o & 1) * c4 + (o >> 2) : o);
  for (let p = 0; p < h * w; p++) {
    const at = p * stride;
    const y = Math.floor(p / w);
    const corner = shuffle ? (2 * y * 2 * w + 2 * (p - y * w)) * c4 : p * cout;
    for (let o = 0; o < cout; o++) {
      const sum = sums[at + o];
      const high = sum * INV_SPLIT + ROUNDER - ROUNDER; // the nearest integer: |low| < 2^24
      const v = fround(fround(fround(fround(high * base) + (sum - high * SPLIT)) * scale[o]) + bias[o]);
      out[corner + target[o]] = relu && v < 0 ? 0 : v;
    }
  }
  return shuffle ? [out, 2 * h, 2 * w] : [out, h, w];
}

/** Inverse (or forward) GDN. Σ_j Γ_ij · a_j² is a 1×1 convolution of the squares with the
 * integer weights Γ, exact in float64 (below 2^53): the convolutions' kernel computes it. */
function runGdn(layer, x, h, w, wasm) {
  const { cin: c, step, scale, beta, inverse } = layer;
  const a = quantizePadded(x, step, h, w, c, 0);
  const squares = new Float64Array(a.length);
  for (let i = 0; i < a.length; i++) squares[i] = a[i] * a[i];
  const sums = wasm ? wasm.sums(layer, squares, h, w, w) : convSums(layer, squares, h, w, w);
  const stride = layer.groups * 4;
  const out = new Float32Array(x.length);
  for (let p = 0; p < h * w; p++) {
    for (let i = 0; i < c; i++) {
      const norm = fround(Math.sqrt(fround(fround(fround(sums[p * stride + i]) * scale[i]) + beta[i])));
      const xq = fround(a[p * c + i] * step);
      out[p * c + i] = inverse ? fround(xq * norm) : fround(xq / norm);
    }
  }
  return [out, h, w];
}

function run(model, net, x, h, w) {
  let shape = [x, h, w];
  for (const layer of net) {
    shape = (layer.kind === "conv" ? runConv : runGdn)(layer, ...shape, model.wasm);
  }
  return shape;
}

// ---- models -------------------------------------------------------------------------------
/** A hyperprior model (blendae 0.3 and later; "gained", the variable-rate general model, is
 * one with gain tables) from its NAME.json metadata and safetensors.
 * `wasm: false` keeps its convolutions in JavaScript (the same bits, slower). */
export function buildModel(meta, safetensors, { wasm = true } = {}) {
  if (meta.model !== "hyperprior" && meta.model !== "gained") {
    throw new BaeError(`model ${meta.name} (${meta.model}) cannot decode in the browser: ` +
      "only the hyperprior models (blendae 0.3 and later) and the gained ones can");
  }
  const t = readSafetensors(safetensors);
  const args = meta.model_args || {};
  const M = args.M ?? 32;
  const context = args.context ?? 0;
  const zPmf = tensor(t, "entropy_bottleneck._pmf", [0, 0]);
  const zOffset = tensor(t, "entropy_bottleneck._offset", [0]).values;
  const [Z, L] = zPmf.shape;
  const zCdfs = Array.from({ length: Z }, (_, c) => tableCdf(zPmf.values.subarray(c * L, (c + 1) * L)));
  const gPmf = tensor(t, "gaussian._pmf", [0, 0]);
  const radius = Int32Array.from(tensor(t, "gaussian._radius", [0]).values);
  const width = gPmf.shape[1];
  const rows = Array.from(radius, (r, k) => gPmf.values.subarray(k * width, k * width + 2 * r + 1));
  const cdfs = rows.map(tableCdf);
  const foldedCdfs = rows.map((row, k) => {
    const r = radius[k];
    return tableCdf(Array.from({ length: r + 1 }, (_, m) => (m ? row[r + m] + row[r - m] : row[r])));
  });
  const conv = (name, amax, opts) => exactConv(t, name, amax, opts);
  const up = { shuffle: true, relu: true };
  const model = {
    name: meta.name,
    id: meta.id,
    M,
    context,
    zCdfs,
    zOffset,
    thresholds: tensor(t, "gaussian.thresholds", [0]).values,
    radius,
    cdfs,
    foldedCdfs,
    pixelMap: pixelMap(meta),
    h_s: [conv("h_s.1", "h_s.0.amax", up), conv("h_s.5", "h_s.4.amax", up), conv("h_s.9", "h_s.8.amax")],
    g_s: [
      conv("g_s.1", "g_s.0.amax"),
      exactGdn(t, "g_s.3", "g_s.2.amax", true),
      conv("g_s.5", "g_s.4.amax", { shuffle: true }),
      exactGdn(t, "g_s.8", "g_s.7.amax", true),
      conv("g_s.10", "g_s.9.amax", { shuffle: true }),
    ],
  };
  if (context) {
    model.ctx = [conv("ctx.1", "ctx.0.amax")];
    model.ep = [
      conv("ep.1", "ep.0.amax", { relu: true }),
      conv("ep.4", "ep.3.amax", { relu: true }),
      conv("ep.7", "ep.6.amax"),
    ];
  }
  model.variableRate = meta.model === "gained";
  if (model.variableRate) {
    // (101, M) float32 rows, one per quality: held exactly as float64 values
    const table = tensor(t, "inv_gain_table", [0, 0]);
    if (table.dtype !== "F32" || table.shape[0] !== MAX_QUALITY + 1 || table.shape[1] !== M) {
      throw new BaeError(`damaged model: inv_gain_table is ${table.dtype} [${table.shape}]`);
    }
    model.invGain = table.values;
  }
  const module = wasm ? wasmConvModule() : null;
  const layers = [model.h_s, model.g_s, model.ctx || [], model.ep || []].flat();
  model.wasm = module ? new WasmConv(layers, module) : null;
  return model;
}

// blendae.data.presets, for a .json that names its preset instead of recording it
const PRESETS = {
  seed: { cifar_mean: [0.5, 0.5, 0.5], cifar_std: [0.5, 0.5, 0.5],
    mnist_mean: [0.485, 0.456, 0.406], mnist_std: [0.229, 0.224, 0.225] },
  unit: { cifar_mean: [0, 0, 0], cifar_std: [1, 1, 1], mnist_mean: [0, 0, 0], mnist_std: [1, 1, 1] },
};

/** Per channel (lo, 255 / (hi − lo)) as float32: the preset's map from model space to pixels
 * (blendae.data.to_pixels). For the shipped models ("unit"): (0, 255). The preset is the one
 * data.preset records, else the one `preset` names (a model trained on --data). */
function pixelMap(meta) {
  const recorded = meta.data?.preset;
  const p = typeof recorded === "object" && recorded ? recorded : PRESETS[meta.preset];
  if (!p) throw new BaeError(`model ${meta.name}: its .json has no data.preset nor a known preset`);
  return [0, 1, 2].map((c) => {
    const lo = (-p.mnist_mean[c] / p.mnist_std[c] - p.cifar_mean[c] / p.cifar_std[c]) / 2;
    const hi = ((1 - p.mnist_mean[c]) / p.mnist_std[c] + (1 - p.cifar_mean[c]) / p.cifar_std[c]) / 2;
    return [fround(lo), fround(255 / (hi - lo))];
  });
}

/** The model id of safetensors contents (docs/format.md, "Model id"): the first 4 bytes of
 * the SHA-256 over the state_dict torch loads from them, in name order, each tensor as
 * `name|dtype|shape|` and its little-endian bytes. */
export async function modelId(safetensors) {
  const parts = [];
  const tensors = readSafetensors(safetensors);
  for (const name of [...tensors.keys()].sort()) {
    const { dtype, shape, values } = tensors.get(name);
    const [, torchType, size] = DTYPES[dtype];
    const dims = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(", ")})`; // Python's
    parts.push(new TextEncoder().encode(`${name}|${torchType}|${dims}|`));
    const bytes = new Uint8Array(values.length * size);
    const view = new DataView(bytes.buffer);
    for (let i = 0; i < values.length; i++) {
      if (size === 8) view.setFloat64(8 * i, values[i], true);
      else if (dtype === "I32") view.setInt32(4 * i, values[i], true);
      else view.setFloat32(4 * i, values[i], true);
    }
    parts.push(bytes);
  }
  const all = new Uint8Array(parts.reduce((n, part) => n + part.length, 0));
  parts.reduce((at, part) => (all.set(part, at), at + part.length), 0);
  return hex(new Uint8Array(await crypto.subtle.digest("SHA-256", all)).subarray(0, 4));
}

/** Fetch NAME.json and the NAME.safetensors beside it; the model, ready to decode. Its
 * weights are checked against its id (as blendae's loader does) where the page may hash
 * (crypto.subtle: https or localhost). */
export async function loadModel(url, options = {}) {
  const metaResponse = await fetch(url);
  if (!metaResponse.ok) throw new BaeError(`cannot load model ${url}: ${metaResponse.status}`);
  const meta = await metaResponse.json();
  const weightsUrl = new URL(url, globalThis.location?.href).href.replace(/\.json$/, ".safetensors");
  const weights = await fetch(weightsUrl);
  if (!weights.ok) throw new BaeError(`cannot load model weights ${weightsUrl}: ${weights.status}`);
  const buffer = await weights.arrayBuffer();
  if (globalThis.crypto?.subtle && (await modelId(buffer)) !== meta.id) {
    throw new BaeError(`model ${url} is damaged: its weights do not match its id ${meta.id}`);
  }
  return buildModel(meta, buffer, options);
}

function findModel(models, id) {
  const one = models && typeof models === "object" && "id" in models;
  const list = Array.isArray(models) ? models : one ? [models] : Object.values(models || {});
  const found = list.find((m) => m.id.startsWith(id));
  if (!found) {
    const known = list.map((m) => `${m.name} (${m.id})`).join(", ") || "none";
    throw new BaeError(`the file was made by codec model ${id}, which is not loaded (loaded: ${known})`);
  }
  return found;
}

// ---- decoding -----------------------------------------------------------------------------
/** Table entry of every scale: the number of thresholds t <= σ (exact comparisons). */
function tableEntries(model, scale, positions) {
  const t = model.thresholds;
  const out = new Uint8Array(positions.length);
  for (let i = 0; i < positions.length; i++) {
    const s = scale[positions[i]];
    let lo = 0;
    let hi = t.length; // the answer is in [lo, hi]
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (s >= t[mid]) lo = mid + 1;
      else hi = mid;
    }
    out[i] = lo;
  }
  return out;
}

/** Pop the values at `positions` (one part of y, in order) with table entries `entries`:
 * grouped by entry, smallest first, then one escape per edge symbol (GaussianConditional). */
function popPart(coder, model, entries, folded) {
  const n = entries.length;
  const counts = new Int32Array(64);
  for (let i = 0; i < n; i++) counts[entries[i]]++;
  const starts = new Int32Array(65);
  for (let k = 0; k < 64; k++) starts[k + 1] = starts[k] + counts[k];
  const order = new Int32Array(n); // stable sort by entry
  const next = starts.slice(0, 64);
  for (let i = 0; i < n; i++) order[next[entries[i]]++] = i;
  const values = new Int32Array(n);
  const edges = [];
  const tables = folded ? model.foldedCdfs : model.cdfs;
  for (let s = 0; s < n; s++) {
    const i = order[s];
    const r = model.radius[entries[i]];
    const v = coder.pop(tables[entries[i]]) - (folded ? 0 : r);
    values[i] = v;
    if (v === r || v === -r) edges.push(i);
  }
  const lengths = edges.map(() => coder.pop(ESCAPE_CDF));
  edges.forEach((i, e) => {
    const bits = lengths[e];
    const overflow = bits >= 2 ? 2 ** (bits - 1) + coder.popBits(bits - 1) : bits;
    values[i] += values[i] > 0 ? overflow : -overflow;
  });
  return values;
}

/** Pop the signs of a part's non-zero values (raw bits in chunks, a short one first). */
function popSigns(coder, values) {
  const nonzero = [];
  for (let i = 0; i < values.length; i++) if (values[i] !== 0) nonzero.push(i);
  const count = nonzero.length;
  let at = 0;
  while (at < count) {
    // a short chunk first (if any), so that the chunk the encoder pushed first is whole
    const first = count >= SIGN_CHUNK ? count % SIGN_CHUNK || SIGN_CHUNK : count;
    const size = at === 0 ? first : SIGN_CHUNK;
    const bits = coder.popBits(size);
    for (let b = 0; b < size; b++) if ((bits >>> b) & 1) values[nonzero[at + b]] = -values[nonzero[at + b]];
    at += size;
  }
}

/** The latent positions (index into channels × rows × columns) of each coded part. */
function parts(model, yh, yw) {
  const all = model.M * yh * yw;
  if (!model.context) return [Int32Array.from({ length: all }, (_, i) => i)];
  const anchors = [];
  const rest = [];
  for (let c = 0; c < model.M; c++) {
    for (let i = 0; i < yh; i++) {
      for (let j = 0; j < yw; j++) ((i + j) % 2 === 0 ? anchors : rest).push((c * yh + i) * yw + j);
    }
  }
  return [Int32Array.from(anchors), Int32Array.from(rest)];
}

/** channels-last (h·w × c) ↔ channel-major (c × h·w) */
function toChannelMajor(x, pixels, c) {
  const out = new Float32Array(x.length);
  for (let p = 0; p < pixels; p++) for (let k = 0; k < c; k++) out[k * pixels + p] = x[p * c + k];
  return out;
}

function toChannelsLast(x, pixels, c) {
  const out = new Float32Array(x.length);
  for (let p = 0; p < pixels; p++) for (let k = 0; k < c; k++) out[p * c + k] = x[k * pixels + p];
  return out;
}

/** The latents ŷ (M × yh × yw each, channel-major) of a payload of `count` images of
 * height × width (a larger image's patches share one stream: each stage of every image
 * before the next stage of any), exactly as the Python decoder: for a gained model, times
 * inv_gain_table[quality] (g_s's input). */
function decodeLatents(model, payload, height, width, quality, count) {
  const coder = new AnsDecoder(payload);
  const M = model.M;
  const zh = height / STRIDE;
  const zw = width / STRIDE;
  const Z = model.zCdfs.length;
  const zs = [];
  for (let b = 0; b < count; b++) {
    const z = new Float32Array(zh * zw * Z);
    for (let c = 0; c < Z; c++) {
      for (let p = 0; p < zh * zw; p++) z[p * Z + c] = coder.pop(model.zCdfs[c]) + model.zOffset[c];
    }
    zs.push(z);
  }
  let yh = 0;
  let yw = 0;
  const hs = zs.map((z) => {
    const [hsLast, h, w] = run(model, model.h_s, z, zh, zw);
    [yh, yw] = [h, w];
    return toChannelMajor(hsLast, h * w, 2 * M); // mean: channels 0..M-1, scale: M..2M-1
  });
  const plane = yh * yw;
  const params = hs.slice();
  const symbols = hs.map(() => new Int32Array(M * plane));
  const coded = parts(model, yh, yw);
  coded.forEach((positions, k) => {
    const apart = Boolean(model.context) && k === coded.length - 1; // signs coded apart
    const values = hs.map((_, b) => {
      if (k) params[b] = restParams(model, hs[b], symbols[b], coded[0], yh, yw);
      const entries = tableEntries(model, params[b].subarray(M * plane), positions);
      return popPart(coder, model, entries, apart);
    });
    if (apart) values.forEach((v) => popSigns(coder, v));
    values.forEach((v, b) => {
      for (let i = 0; i < positions.length; i++) symbols[b][positions[i]] = v[i];
    });
  });
  if (!coder.isEmpty()) throw new BaeError("corrupt .bae payload: data left over after the last symbol");
  const ys = symbols.map((sym, b) => {
    const y = new Float32Array(M * plane);
    for (let i = 0; i < y.length; i++) y[i] = fround(sym[i] + params[b][i]);
    if (model.variableRate) {
      const row = model.invGain.subarray(quality * M, (quality + 1) * M);
      for (let c = 0; c < M; c++) {
        for (let p = c * plane; p < (c + 1) * plane; p++) y[p] = fround(y[p] * row[c]);
      }
    }
    return y;
  });
  return [ys, yh, yw];
}

/** Mean and scale of the non-anchors: h_s's plus the context networks' correction. */
function restParams(model, hs, symbols, anchors, yh, yw) {
  const M = model.M;
  const plane = yh * yw;
  const yAnchors = new Float32Array(M * plane);
  for (const p of anchors) yAnchors[p] = fround(symbols[p] + hs[p]);
  const [ctx] = run(model, model.ctx, toChannelsLast(yAnchors, plane, M), yh, yw);
  const both = new Float32Array(plane * 4 * M); // [h_s, ctx] per pixel
  const hsLast = toChannelsLast(hs, plane, 2 * M);
  for (let p = 0; p < plane; p++) {
    both.set(hsLast.subarray(p * 2 * M, (p + 1) * 2 * M), p * 4 * M);
    both.set(ctx.subarray(p * 2 * M, (p + 1) * 2 * M), p * 4 * M + 2 * M);
  }
  const [ep] = run(model, model.ep, both, yh, yw);
  const params = new Float32Array(hs);
  const correction = toChannelMajor(ep, plane, 2 * M);
  for (let i = 0; i < params.length; i++) {
    const p = i % plane;
    if ((Math.floor(p / yw) + (p % yw)) % 2) params[i] = fround(hs[i] + correction[i]);
  }
  return params;
}

/** Decode .bae bytes with one of `models` (a model, an array, or an object of models) into
 * {width, height, channels, pixels}: uint8, height × width × channels, as blendae decodes. */
export function decodePixels(bytes, models) {
  const header = parseHeader(bytes);
  const { channels, quality, height, width, payload } = header;
  const model = findModel(models, header.modelId);
  if (!madeBy(header, model.id)) throw new BaeError(CHECKSUM_MISMATCH);
  if (Boolean(model.variableRate) !== (quality !== null)) { // only a forged file: the id matched
    const want = model.variableRate ? "a quality" : "no quality";
    throw new BaeError(`corrupt .bae header: its model's files carry ${want}`);
  }
  // what the model coded: the image padded to multiples of 16, or rows × columns patches
  const side = header.patch || STRIDE;
  const rows = Math.ceil(height / side);
  const columns = Math.ceil(width / side);
  const W = columns * side;
  const [ph, pw] = header.patch ? [side, side] : [rows * side, W];
  const [ys, yh, yw] = decodeLatents(model, payload, ph, pw, quality, header.patch ? rows * columns : 1);
  const x = new Float32Array(rows * side * W * 3);
  ys.forEach((y, b) => {
    const [out] = run(model, model.g_s, toChannelsLast(y, yh * yw, model.M), yh, yw);
    const top = header.patch ? Math.floor(b / columns) * ph : 0;
    const left = header.patch ? (b % columns) * pw : 0;
    for (let i = 0; i < ph; i++) x.set(out.subarray(i * pw * 3, (i + 1) * pw * 3), ((top + i) * W + left) * 3);
  });
  const pixels = new Uint8Array(height * width * channels);
  const [[lo0, k0], [lo1, k1], [lo2, k2]] = model.pixelMap;
  const level = (v) => rint(v < 0 ? 0 : v > 255 ? 255 : v); // NaN stays NaN → 0 in a Uint8Array
  for (let i = 0; i < height; i++) {
    for (let j = 0; j < width; j++) {
      const at = (i * W + j) * 3;
      const r = fround(fround(x[at] - lo0) * k0);
      const g = fround(fround(x[at + 1] - lo1) * k1);
      const b = fround(fround(x[at + 2] - lo2) * k2);
      const out = (i * width + j) * channels;
      if (channels === 1) {
        pixels[out] = level(fround(fround(fround(r + g) + b) / 3));
      } else {
        pixels[out] = level(r);
        pixels[out + 1] = level(g);
        pixels[out + 2] = level(b);
      }
    }
  }
  return { width, height, channels, pixels };
}

/** Decode .bae bytes into an ImageData (RGBA; a plain {width, height, data} where ImageData
 * does not exist, e.g. in Node). Throws a BaeError that says what is wrong with a bad file. */
export function decode(bytes, models) {
  const { width, height, channels, pixels } = decodePixels(bytes, models);
  const data = new Uint8ClampedArray(width * height * 4);
  for (let p = 0; p < width * height; p++) {
    for (let c = 0; c < 3; c++) data[4 * p + c] = pixels[p * channels + (channels === 1 ? 0 : c)];
    data[4 * p + 3] = 255;
  }
  return typeof ImageData === "function" ? new ImageData(data, width, height) : { width, height, data };
}
