import { describe, expect, it } from "vitest";
import { parseJson } from "../../src/json";
import {
	canonicalJson,
	eventKey,
	MAX_DEPTH,
	MAX_FIELDS,
	unmodeledProblems,
} from "../../src/tencent/raw";

async function sha256Hex(text: string): Promise<string> {
	const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
	return Array.from(new Uint8Array(digest), (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** `levels` arrays nested inside each other around `inner`. */
function nestedArrays(levels: number, inner: unknown = 1): unknown {
	let value = inner;
	for (let i = 0; i < levels; i++) value = [value];
	return value;
}

/** `levels` objects nested inside each other under key "k" around `inner`. */
function nestedObjects(levels: number, inner: unknown = 1): unknown {
	let value = inner;
	for (let i = 0; i < levels; i++) value = { k: value };
	return value;
}

describe("canonicalJson", () => {
	it("sorts keys, as in its example", () => {
		expect(canonicalJson({ b: 1, a: [true, null] })).toBe('{"a":[true,null],"b":1}');
	});

	it("gives the same text for any key order, at every depth", () => {
		const one = { z: 1, a: { y: [{ d: 1, c: 2 }], x: { q: null, p: "s" } }, m: "v" };
		const other = { m: "v", a: { x: { p: "s", q: null }, y: [{ c: 2, d: 1 }] }, z: 1 };
		const expected = '{"a":{"x":{"p":"s","q":null},"y":[{"c":2,"d":1}]},"m":"v","z":1}';
		expect(canonicalJson(one)).toBe(expected);
		expect(canonicalJson(other)).toBe(expected);
	});

	it("sorts integer-like keys as strings, by UTF-16 code unit", () => {
		// Object.entries would list "2" and "10" first, numerically.
		expect(canonicalJson({ b: 0, 10: 1, 2: 2, B: 3, é: 4, _: 5 })).toBe(
			'{"10":1,"2":2,"B":3,"_":5,"b":0,"é":4}',
		);
	});

	it("keeps array order", () => {
		expect(canonicalJson([3, 1, 2])).toBe("[3,1,2]");
		expect(canonicalJson([{ b: 1, a: 2 }, "x", [2, 1]])).toBe('[{"a":2,"b":1},"x",[2,1]]');
		expect(canonicalJson([])).toBe("[]");
		expect(canonicalJson({})).toBe("{}");
	});

	it("writes a number kept as its source text as that text", () => {
		const received = parseJson('{"b":12345678901234567891,"a":[1e400]}');
		expect(canonicalJson(received)).toBe('{"a":[1e400],"b":12345678901234567891}');
	});

	it("writes scalars as JSON.stringify does", () => {
		expect(canonicalJson(null)).toBe("null");
		expect(canonicalJson(true)).toBe("true");
		expect(canonicalJson(0)).toBe("0");
		expect(canonicalJson(-1.5e-7)).toBe("-1.5e-7");
		expect(canonicalJson(2 ** 64)).toBe("18446744073709552000");
	});

	it("escapes strings and keys as JSON.stringify does", () => {
		const tricky = 'quote " backslash \\ newline \n tab \t nul \u0000 \u2028 é 测 😀 \ud800';
		expect(canonicalJson(tricky)).toBe(JSON.stringify(tricky));
		expect(canonicalJson({ [tricky]: tricky })).toBe(
			`{${JSON.stringify(tricky)}:${JSON.stringify(tricky)}}`,
		);
		expect(canonicalJson('a"b')).toBe('"a\\"b"');
		expect(canonicalJson("\ud800")).toBe('"\\ud800"');
	});

	it("keeps an own __proto__ key", () => {
		const parsed = JSON.parse('{"b":1,"__proto__":{"polluted":true},"a":2}');
		expect(canonicalJson(parsed)).toBe('{"__proto__":{"polluted":true},"a":2,"b":1}');
	});

	it("round-trips through JSON.parse to an equal value", () => {
		const value = { list: [1, "two", { three: [3] }], flag: false, none: null, text: "é\n" };
		expect(JSON.parse(canonicalJson(value))).toEqual(value);
	});
});

describe("eventKey", () => {
	it("is the first 128 bits of the SHA-256 of the canonical JSON, in lower-case hex", async () => {
		// SHA-256("{}") = 44136fa3...1caaff8a
		expect(await eventKey({})).toBe("44136fa355b3678a1146ad16f7e8649e");
		const event = { b: [2, 3], a: 1 };
		const full = await sha256Hex('{"a":1,"b":[2,3]}');
		expect(full).toBe("efbd0040190fb0871831e606c581f8a66db79d8e2bb836745a70051306956070");
		expect(await eventKey(event)).toBe(full.slice(0, 32));
	});

	it("hashes the UTF-8 of non-ASCII text", async () => {
		const event = { subject: "测试 é" };
		expect(await eventKey(event)).toBe((await sha256Hex('{"subject":"测试 é"}')).slice(0, 32));
	});

	it("is 32 lower-case hex characters", async () => {
		const key = await eventKey({ event: "delivered", email: "A@B.C", time: 1 });
		expect(key).toMatch(/^[0-9a-f]{32}$/);
	});

	it("is the same for reordered keys", async () => {
		const one = { event: "bounce", data: { reason: "x", code: 550 }, email: "a@b.c" };
		const other = { email: "a@b.c", data: { code: 550, reason: "x" }, event: "bounce" };
		expect(await eventKey(other)).toBe(await eventKey(one));
	});

	it("differs when any value differs", async () => {
		const base = { event: "bounce", data: { code: 550, list: [1, 2] }, email: "a@b.c" };
		const key = await eventKey(base);
		const variants = [
			{ ...base, event: "Bounce" },
			{ ...base, email: "a@b.cc" },
			{ ...base, data: { code: 551, list: [1, 2] } },
			{ ...base, data: { code: "550", list: [1, 2] } },
			{ ...base, data: { code: 550, list: [2, 1] } },
			{ ...base, data: { code: 550, list: [1, 2], extra: null } },
			{ event: "bounce", data: { code: 550, list: [1, 2] } },
		];
		const keys = await Promise.all(variants.map((variant) => eventKey(variant)));
		for (const other of keys) expect(other).not.toBe(key);
		expect(new Set(keys).size).toBe(variants.length);
	});
});

describe("unmodeledProblems", () => {
	const modeled = new Set(["event", "email", "subject"]);

	it("finds nothing in ordinary unmodeled fields", () => {
		const received = {
			event: "delivered",
			extra: { nested: [1, "two", null, { three: true }] },
			note: "测试 😀",
		};
		expect(unmodeledProblems(received, modeled)).toEqual([]);
	});

	it("allows MAX_FIELDS fields and refuses one more", () => {
		expect(MAX_FIELDS).toBe(200);
		const fields = (count: number) =>
			Object.fromEntries(Array.from({ length: count }, (_, i) => [`f${i}`, i]));
		expect(unmodeledProblems(fields(200), modeled)).toEqual([]);
		expect(unmodeledProblems(fields(201), modeled)).toEqual([
			{ path: "", message: "must have at most 200 fields, has 201" },
		]);
	});

	it("counts modeled fields towards MAX_FIELDS", () => {
		const received: Record<string, unknown> = { event: "x", email: "y", subject: "z" };
		for (let i = 0; i < 198; i++) received[`f${i}`] = i;
		expect(unmodeledProblems(received, modeled)).toEqual([
			{ path: "", message: "must have at most 200 fields, has 201" },
		]);
	});

	it("allows containers nested MAX_DEPTH - 1 deep in a field and refuses MAX_DEPTH", () => {
		expect(MAX_DEPTH).toBe(8);
		const tooDeep = { path: "deep", message: "must be nested at most 8 levels deep" };
		expect(unmodeledProblems({ deep: nestedArrays(7) }, modeled)).toEqual([]);
		expect(unmodeledProblems({ deep: nestedObjects(7) }, modeled)).toEqual([]);
		expect(unmodeledProblems({ deep: nestedArrays(8) }, modeled)).toEqual([tooDeep]);
		expect(unmodeledProblems({ deep: nestedObjects(8) }, modeled)).toEqual([tooDeep]);
		expect(unmodeledProblems({ deep: nestedArrays(7, {}) }, modeled)).toEqual([tooDeep]);
		expect(unmodeledProblems({ deep: nestedObjects(50) }, modeled)).toEqual([tooDeep]);
	});

	it("refuses a lone surrogate in a nested string", () => {
		const received = { event: "x", extra: { list: ["ok", { text: "bad \ud800 here" }] } };
		expect(unmodeledProblems(received, modeled)).toEqual([
			{ path: "extra", message: "must be well-formed Unicode" },
		]);
	});

	it("refuses a lone surrogate in a nested key", () => {
		const received = { extra: { inner: { "k\udc00": 1 } } };
		expect(unmodeledProblems(received, modeled)).toEqual([
			{ path: "extra", message: "must be well-formed Unicode" },
		]);
	});

	it("refuses a lone surrogate in a top-level key, modeled or not", () => {
		const issue = { path: "bad\ud800", message: "field name must be well-formed Unicode" };
		expect(unmodeledProblems({ "bad\ud800": "value", ok: "fine" }, modeled)).toEqual([issue]);
		expect(unmodeledProblems({ "bad\ud800": "value" }, new Set(["bad\ud800"]))).toEqual([issue]);
	});

	it("skips modeled fields", () => {
		const received = {
			event: "\ud800",
			email: nestedArrays(20),
			subject: Array.from({ length: 5000 }, () => 0),
			extra: "fine",
		};
		expect(unmodeledProblems(received, modeled)).toEqual([]);
	});

	it("reports each bad unmodeled field, in order", () => {
		const received = { a: "\udfff", event: "\ud800", b: "ok", c: nestedArrays(9) };
		expect(unmodeledProblems(received, modeled)).toEqual([
			{ path: "a", message: "must be well-formed Unicode" },
			{ path: "c", message: "must be nested at most 8 levels deep" },
		]);
	});

	it("has a budget of 2000 values across unmodeled fields", () => {
		const budget = "must have at most 2000 values in unmodeled fields";
		// The array itself is one value: 1 + 1999 fits, 1 + 2000 does not.
		expect(unmodeledProblems({ big: new Array(1999).fill(0) }, modeled)).toEqual([]);
		expect(unmodeledProblems({ big: new Array(2000).fill(0) }, modeled)).toEqual([
			{ path: "big", message: budget },
		]);
		expect(unmodeledProblems({ big: new Array(1_000_000).fill("x") }, modeled)).toEqual([
			{ path: "big", message: budget },
		]);
	});

	it("shares the budget between fields, counting object keys", () => {
		const budget = "must have at most 2000 values in unmodeled fields";
		// 1 + 999 pairs of (key, value) = 1999 values, then 1 for the next field's string.
		const keyed = Object.fromEntries(Array.from({ length: 999 }, (_, i) => [`k${i}`, i]));
		expect(unmodeledProblems({ first: keyed, second: "x" }, modeled)).toEqual([]);
		expect(unmodeledProblems({ first: keyed, second: "x", third: "y" }, modeled)).toEqual([
			{ path: "third", message: budget },
		]);
		// Modeled fields cost nothing.
		expect(unmodeledProblems({ first: keyed, event: "x", second: "y" }, modeled)).toEqual([]);
	});
});
