// rnn-textgen in the browser: load model.onnx + vocab.json with onnxruntime-web and generate.
// Written from the artifact format alone (README, "How the pieces fit"): vocab.json is
// validated as the Python runtime validates it and the model's sha256 is checked (Web
// Crypto) before onnxruntime sees the bytes. Needs the global `ort` (onnxruntime-web).
//
//   import { Model } from "./textgen.js";
//   const model = await Model.load("./model/");
//   for await (const ch of model.stream("The ", 200, { temperature: 0.8, seed: 1 })) ...
//   model.generate("The ", 200)  ->  Promise<string>: prompt + generated text
//   model.predict("The ")        ->  Promise<[char, probability][]>: next characters
//   model.feed("more text"); model.reset()   (a running context, as ml5's charRNN)

export const FORMAT = "rnn-textgen-vocab";
// Version 3: a vocabulary of 1,024 characters or more, one-hot encoded by an OneHot node.
export const VERSIONS = [1, 2, 3];
const MODE_VERSIONS = { window: 1, stateful: 2 };
const MODEL_FILES = { fp32: "model.onnx", int8: "model.int8.onnx" };
export const MAX_LENGTH = 100000;

export class TextgenError extends Error {
  constructor(message) {
    super(message);
    this.name = "TextgenError";
  }
}

function check(ok, problem) {
  if (!ok) throw new TextgenError(`vocab.json is malformed: ${problem}; re-export the model`);
}

const isInt = (x) => Number.isInteger(x);
const isName = (x) => typeof x === "string" && x.length > 0 && x.length <= 256;
const isSha = (x) => typeof x === "string" && /^[0-9a-f]{64}$/.test(x);

function tensor(doc, where, dtypes) {
  check(doc && typeof doc === "object" && !Array.isArray(doc), `${where} is missing`);
  check(isName(doc.name), `${where}.name must be a short string`);
  check(dtypes.includes(doc.dtype), `${where}.dtype must be one of ${dtypes.join(", ")}`);
  check(
    Array.isArray(doc.shape) && doc.shape.every((d) => d === null || (isInt(d) && d > 0)),
    `${where}.shape must be a list of positive integers or null`,
  );
  return doc;
}

/** Validate a parsed vocab.json (format, version, fields) as runtime/artifact.py does. */
export function validateSpec(doc) {
  check(doc && typeof doc === "object" && !Array.isArray(doc), "the top level is not an object");
  check(doc.format === FORMAT, `its format is not ${JSON.stringify(FORMAT)}`);
  check(isInt(doc.version), "its version is missing or not an integer");
  if (!VERSIONS.includes(doc.version)) {
    throw new TextgenError(
      `vocab.json has format version ${doc.version}, but this page reads version(s) ` +
        `${VERSIONS.join(", ")}; upgrade rnn-textgen or re-export the model`,
    );
  }
  check(doc.mode in MODE_VERSIONS, "mode is not window or stateful");
  check(MODE_VERSIONS[doc.mode] <= doc.version, `mode ${doc.mode} needs a newer version`);
  const chars = doc.chars;
  check(Array.isArray(chars) && chars.length > 0 && chars.length <= 65536, "chars is not a list");
  check(
    chars.every((c) => typeof c === "string" && [...c].length === 1 && c.isWellFormed()),
    "every entry of chars must be a single Unicode character",
  );
  check(new Set(chars).size === chars.length, "chars holds the same character twice");
  check(isInt(doc.seq_length) && doc.seq_length >= 1 && doc.seq_length <= 100000,
    "seq_length must be an integer from 1 to 100000");
  const g = doc.graph;
  check(g && typeof g === "object", "graph is missing");
  tensor(g.input, "graph.input", ["int32", "int64"]);
  tensor(g.output, "graph.output", ["float32"]);
  tensor(g.next, "graph.next", ["int64"]);
  if (doc.mode === "stateful") {
    check(Array.isArray(g.states) && g.states.length >= 1 && g.states.length <= 64,
      "graph.states must list the state tensors");
    for (const s of g.states) {
      check(isName(s.input) && isName(s.output), "a state needs input and output names");
      check(s.dtype === "float32", "state dtype must be float32");
      check(Array.isArray(s.shape) && s.shape.length === 2 && s.shape[0] === null &&
        isInt(s.shape[1]) && s.shape[1] > 0, "state shape must be [null, units]");
    }
  } else {
    check(g.states === undefined, "graph.states is only for stateful models");
  }
  check(isSha(doc.model_sha256), "model_sha256 must be 64 lowercase hex digits");
  const variants = doc.variants ?? {};
  check(typeof variants === "object" && !Array.isArray(variants), "variants must be an object");
  for (const [precision, v] of Object.entries(variants)) {
    check(precision === "int8", `variants.${precision} is not int8`);
    check(v && isSha(v.sha256), `variants.${precision}.sha256 must be 64 lowercase hex digits`);
  }
  return doc;
}

/** A key some object of `text` (valid JSON) holds twice, or null. JSON.parse keeps the
 * last value, other readers the first: the Python runtime refuses such a file, and so
 * does this page. */
function repeatedKey(text) {
  const stack = []; // per open object {keys, expectKey}; null for an array
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      const top = stack[stack.length - 1];
      if (top && top.expectKey) {
        const key = JSON.parse(text.slice(i, j + 1));
        if (top.keys.has(key)) return key;
        top.keys.add(key);
        top.expectKey = false;
      }
      i = j;
    } else if (c === "{") {
      stack.push({ keys: new Set(), expectKey: true });
    } else if (c === "[") {
      stack.push(null);
    } else if (c === "}" || c === "]") {
      stack.pop();
    } else if (c === ",") {
      const top = stack[stack.length - 1];
      if (top) top.expectKey = true;
    }
  }
  return null;
}

async function sha256Hex(bytes) {
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

// A small seeded generator (mulberry32): the same seed gives the same text in every browser.
function rng(seed) {
  let a = (seed ?? Math.floor(Math.random() * 2 ** 32)) >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function sample(probs, { temperature = 1, topK = null, topP = null }, random) {
  const logp = Array.from(probs, (p) => Math.log(p));
  const peak = Math.max(...logp);
  let w = logp.map((l) => Math.exp((l - peak) / temperature));
  const order = w.map((_, i) => i).sort((a, b) => w[b] - w[a] || a - b);
  const keep = new Set(order.slice(0, topK ?? order.length));
  if (topP !== null && topP < 1) {
    const total = order.reduce((s, i) => s + (keep.has(i) ? w[i] : 0), 0);
    let mass = 0;
    for (const i of order) {
      if (!keep.has(i)) continue;
      if (mass >= topP * total) keep.delete(i);
      else mass += w[i];
    }
  }
  w = w.map((x, i) => (keep.has(i) ? x : 0));
  let u = random() * w.reduce((s, x) => s + x, 0);
  for (const i of order) {
    if (!w[i]) continue;
    u -= w[i];
    if (u <= 0) return i;
  }
  return order[0];
}

export class Model {
  constructor(ort, session, spec, precision) {
    this.ort = ort;
    this.session = session;
    this.spec = spec;
    this.precision = precision;
    this.index = new Map(spec.chars.map((c, i) => [c, i]));
    this.text = ""; // the running context of feed() / reset()
  }

  /** Load `base` (a URL ending in "/") holding vocab.json and the model files. */
  static async load(base, { precision = "fp32", ort = globalThis.ort } = {}) {
    if (!ort) throw new TextgenError("onnxruntime-web is not loaded on this page");
    if (!(precision in MODEL_FILES)) throw new TextgenError(`no precision ${precision}`);
    // Revalidated, never taken from the cache unchecked: a cached vocab.json beside a new
    // model.onnx (or the reverse) would be refused as a mismatch after every re-export.
    const fresh = { cache: "no-cache" };
    const vocabResponse = await fetch(new URL("vocab.json", new URL(base, location.href)), fresh);
    if (!vocabResponse.ok) throw new TextgenError(`vocab.json not found at ${base}`);
    let doc;
    try {
      // Strict UTF-8 with a byte-order mark kept (so refused), as the Python runtime reads it.
      const text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(
        await vocabResponse.arrayBuffer(),
      );
      doc = JSON.parse(text);
      const twice = repeatedKey(text);
      if (twice !== null) {
        throw new TextgenError(
          `vocab.json is malformed: key ${JSON.stringify(twice)} appears twice in one ` +
            "object; re-export the model",
        );
      }
    } catch (e) {
      if (e instanceof TextgenError) throw e;
      throw new TextgenError(`vocab.json is not valid JSON (${e.message}); re-export the model`);
    }
    const spec = validateSpec(doc);
    const expected = precision === "fp32" ? spec.model_sha256 : spec.variants?.int8?.sha256;
    if (!expected) throw new TextgenError(`this model has no ${precision} variant`);
    const file = MODEL_FILES[precision];
    const response = await fetch(new URL(file, new URL(base, location.href)), fresh);
    if (!response.ok) throw new TextgenError(`${file} not found at ${base}`);
    const bytes = new Uint8Array(await response.arrayBuffer());
    if ((await sha256Hex(bytes)) !== expected) {
      throw new TextgenError(
        `${file} does not match the sha256 in vocab.json (corrupt, truncated or from ` +
          "another export); copy both files from the same export",
      );
    }
    const session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] });
    return new Model(ort, session, spec, precision);
  }

  encode(text, { whole = true } = {}) {
    const chars = [...text];
    const unknown = [...new Set(chars.filter((c) => !this.index.has(c)))];
    if (unknown.length) {
      // A combining mark would sit on the quote before it: shown by code point. Where the
      // text's other Unicode normal form reads, say so (as the Python runtime does).
      const shown = (c) =>
        /\p{M}/u.test(c)
          ? `U+${c.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")}`
          : JSON.stringify(c);
      const reads = (f) => [...text.normalize(f)].every((c) => this.index.has(c));
      const form = ["NFC", "NFD"].find(reads);
      const hint = form ? `; its Unicode ${form} form has none: normalize it to ${form}` : "";
      throw new TextgenError(
        `the prompt has characters outside the model's vocabulary: ${unknown
          .slice(0, 20)
          .map(shown)
          .join(", ")}${hint}`,
      );
    }
    const need = this.spec.mode === "stateful" ? 1 : this.spec.seq_length;
    if (whole && chars.length < need) {
      throw new TextgenError(
        `the model reads windows of ${need} characters and the prompt has only ${chars.length}`,
      );
    }
    return chars.map((c) => this.index.get(c));
  }

  ids(values, dims) {
    const { ort, spec } = this;
    if (spec.graph.input.dtype === "int64") {
      return new ort.Tensor("int64", BigInt64Array.from(values, (v) => BigInt(v)), dims);
    }
    return new ort.Tensor("int32", Int32Array.from(values), dims);
  }

  zeroStates() {
    return this.spec.graph.states.map((s) => new Float32Array(s.shape[1]));
  }

  async run(ids, states) {
    const { ort, spec } = this;
    const g = spec.graph;
    const feeds = { [g.input.name]: this.ids(ids, [1, ids.length]) };
    for (const [i, s] of (g.states ?? []).entries()) {
      feeds[s.input] = new ort.Tensor("float32", states[i], [1, s.shape[1]]);
    }
    const out = await this.session.run(feeds);
    const next = Number(out[g.next.name].data[0]);
    if (!(next >= 0 && next < spec.chars.length)) {
      throw new TextgenError(`the model chose character ${next}, outside its vocabulary`);
    }
    const newStates = (g.states ?? []).map((s) => out[s.output].data);
    return { next, probs: out[g.output.name].data, states: newStates };
  }

  /** Yield up to `length` characters; options: temperature, topK, topP, seed, stop. */
  async *stream(prompt, length, options = {}) {
    if (!Number.isInteger(length) || length < 1 || length > MAX_LENGTH) {
      throw new TextgenError(`length must be a whole number from 1 to ${MAX_LENGTH}`);
    }
    const greedy = options.temperature == null && options.topK == null && options.topP == null;
    const random = rng(options.seed);
    const stops = options.stop ?? [];
    const ids = this.encode(prompt);
    const { spec } = this;
    let states = null;
    let window = ids.slice(-spec.seq_length);
    if (spec.mode === "stateful") {
      states = this.zeroStates();
      if (ids.length > 1) {
        // The prompt but its last character, in slices (as the Python runtime warms up).
        for (let start = 0; start < ids.length - 1; start += 4096) {
          const slice = ids.slice(start, Math.min(start + 4096, ids.length - 1));
          states = (await this.run(slice, states)).states;
        }
      }
      window = [ids[ids.length - 1]];
    }
    let text = prompt;
    for (let i = 0; i < length; i++) {
      const out = await this.run(window, states);
      const choice = greedy ? out.next : sample(out.probs, options, random);
      const ch = spec.chars[choice];
      yield ch;
      text += ch;
      if (spec.mode === "stateful") {
        states = out.states;
        window = [choice];
      } else {
        window = [...window.slice(1), choice];
      }
      if (stops.some((s) => s && text.endsWith(s))) return;
    }
  }

  async generate(prompt, length, options = {}) {
    let text = prompt;
    for await (const ch of this.stream(prompt, length, options)) text += ch;
    return text;
  }

  /** The next characters after `text` (default: the fed context), most likely first. */
  async predict(text = this.text, k = 5) {
    const ids = this.encode(text);
    let out;
    if (this.spec.mode === "stateful") {
      let states = this.zeroStates();
      if (ids.length > 1) states = (await this.run(ids.slice(0, -1), states)).states;
      out = await this.run([ids[ids.length - 1]], states);
    } else {
      out = await this.run(ids.slice(-this.spec.seq_length), null);
    }
    return Array.from(out.probs, (p, i) => [this.spec.chars[i], p])
      .sort((a, b) => b[1] - a[1])
      .slice(0, k);
  }

  feed(text) {
    this.encode(text, { whole: false }); // refuse unknown characters now
    this.text += text;
    return this;
  }

  reset() {
    this.text = "";
    return this;
  }
}
