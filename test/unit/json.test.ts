import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { isRawJson, parseJson, repeatedMemberName } from "../../src/json";

const roundTrip = (text: string) => JSON.stringify(parseJson(text));

describe("parseJson", () => {
	it("writes back, digit for digit, its example", () => {
		expect(roundTrip('{"id": 12345678901234567890}')).toBe('{"id":12345678901234567890}');
	});

	it.each([
		["an integer just past 2^53", "9007199254740993"],
		["a negative one", "-9007199254740993"],
		["a 20-digit integer", "98765432109876543210"],
		["a fraction of 20 significant digits", "0.12345678901234567891"],
		// 16 digits, more than a double keeps: it reads back as 8.000000000000002.
		["a number of 16 significant digits", "8.000000000000001"],
		["one with leading zeros and an exponent", "0.000012345678901234567891e-3"],
		["one that overflows a double", "1e400"],
		["one that underflows to 0", "1e-400"],
		["one below a double's normal range", "4.9406564584124654e-324"],
		// 15 digits, but a subnormal double keeps fewer: it reads back as 5.00000000000003e-310.
		["a subnormal of 15 significant digits", "5.00000000000001e-310"],
		["a 400-digit integer", "9".repeat(400)],
		["an integer with an exponent", "123456789012345678e2"],
	])("keeps %s as its source text", (_name, source) => {
		const value = parseJson(`[${source}]`) as unknown[];
		expect(isRawJson(value[0])).toBe(true);
		expect(JSON.stringify(value)).toBe(`[${source}]`);
	});

	it.each([
		["the largest safe integer", "9007199254740991", 9007199254740991],
		["a Unix time", "1767225600", 1767225600],
		["a fraction of 15 significant digits", "0.123456789012345", 0.123456789012345],
		["a spelling JSON.stringify writes otherwise", "1.50", 1.5],
		["an exponent", "1.5e300", 1.5e300],
		["negative zero", "-0", -0],
		["a whole number written with 17 digits", "1767225600.0000000", 1767225600],
		["one with an exponent and trailing zeros", "1.767225600000000e9", 1767225600],
		["zero with an exponent", "0.0e-400", 0],
		["a number just inside the normal range", "3e-308", 3e-308],
	])("reads %s as a plain number", (_name, source, expected) => {
		// Beside a lossy number, so the text takes the reviver's path, not the fast one.
		const value = parseJson(`[${"9".repeat(20)}, ${source}]`) as unknown[];
		expect(value[1]).toBe(expected);
	});

	it("reads a long number inside a string as a string, beside a lossy one", () => {
		const value = parseJson('{"s":"a \\" 12345678901234567891","n":12345678901234567891}');
		expect(JSON.stringify(value)).toBe(
			'{"s":"a \\" 12345678901234567891","n":12345678901234567891}',
		);
	});

	it("leaves digits inside strings alone", () => {
		expect(parseJson('{"bulkId":"12345678901234567890"}')).toEqual({
			bulkId: "12345678901234567890",
		});
	});

	it("throws JSON.parse's SyntaxError on either path", () => {
		expect(() => parseJson("{")).toThrow(SyntaxError);
		expect(() => parseJson("[12345678901234567890,")).toThrow(SyntaxError);
	});

	// Inputs in the hundreds of kilobytes: each of these once took seconds to tens of seconds of
	// CPU (a regex that rescanned runs of zeros, or an unterminated string, to the end).
	it("counts the significant digits of a number with long runs of zeros", () => {
		const zeros = "0".repeat(200_000);
		expect(roundTrip(`{"x":1.${zeros}1}`)).toBe(`{"x":1.${zeros}1}`);
		expect(parseJson(`{"x":1.${zeros}}`)).toEqual({ x: 1 });
		expect(parseJson(`{"x":0.${zeros}}`)).toEqual({ x: 0 });
		expect(parseJson(`[1.000000000000000, ${zeros.replace(/0/g, " ")}2]`)).toEqual([1, 2]);
	});

	it("throws for text that is not JSON before scanning its numbers", () => {
		const unterminated = `[1.000000000000000,"${'\\"'.repeat(100_000)}`;
		expect(() => parseJson(unterminated)).toThrow(SyntaxError);
	});

	it("keeps a long number after white space of every kind", () => {
		expect(roundTrip('{"a":\n\t 12345678901234567891}')).toBe('{"a":12345678901234567891}');
	});

	it("writes back any text of integers and doubles as JSON.stringify would, digit for digit", () => {
		// Integers of any size, and doubles as JSON.stringify writes them, nested in arrays and
		// objects: the text parsed and written again is the text.
		const number = fc.oneof(
			fc.bigInt({ min: -(10n ** 40n), max: 10n ** 40n }).map(String),
			fc.double({ noNaN: true, noDefaultInfinity: true }).map((value) => JSON.stringify(value)),
		);
		const text = fc.letrec<{ value: string }>((tie) => ({
			value: fc.oneof(
				{ depthSize: "small" },
				number,
				fc.string().map((value) => JSON.stringify(value)),
				fc.array(tie("value"), { maxLength: 4 }).map((items) => `[${items.join(",")}]`),
				fc
					.uniqueArray(fc.tuple(fc.string(), tie("value")), {
						maxLength: 4,
						selector: ([key]) => key,
					})
					// Keys never look like integers, which objects would list first.
					.map(
						(entries) =>
							`{${entries.map(([k, v]) => `${JSON.stringify(`k${k}`)}:${v}`).join(",")}}`,
					),
			),
		})).value;
		fc.assert(
			fc.property(text, (source) => {
				expect(JSON.stringify(parseJson(source))).toBe(source);
			}),
			{ numRuns: 500 },
		);
	});
});

describe("repeatedMemberName", () => {
	it.each([
		['{"a":1,"a":2}', "a"],
		['{"a":1,"\\u0061":2}', "a"],
		['[{"x":{"b":[1,{"c":0,"c":0}]}}]', "c"],
		['{"s":"\\"a\\":","t":{},"t":1}', "t"],
	])("finds the name repeated in %s", (text, name) => {
		expect(repeatedMemberName(text)).toBe(name);
	});

	it.each([
		'{"a":"a","b":{"a":"b"},"c":[{"a":1},{"a":2}]}',
		'{"a:":1,"a":"a:","\\"":2,"\\\\":3}',
		`${"[".repeat(10_000)}${"]".repeat(10_000)}`,
	])("finds none in %s", (text) => {
		expect(repeatedMemberName(text)).toBeNull();
	});

	it("agrees with JSON.parse on what a text holds", () => {
		// Objects written from pairs whose names may repeat, as written on the wire ("\\u0061" is
		// "a"); JSON.parse keeps one member per name, so a text repeats one when it keeps fewer
		// members than it writes.
		type Written = { text: string; members: number };
		const name = fc.constantFrom('"a"', '"b"', '"\\u0061"', '"\\""', '":"');
		const tree = fc.letrec<{ value: Written }>((tie) => ({
			value: fc.oneof(
				{ depthSize: "small" },
				fc.string().map((value) => ({ text: JSON.stringify(value), members: 0 })),
				fc.integer().map((value) => ({ text: String(value), members: 0 })),
				fc.array(tie("value"), { maxLength: 4 }).map((items) => ({
					text: `[${items.map((item) => item.text).join(",")}]`,
					members: items.reduce((sum, item) => sum + item.members, 0),
				})),
				fc.array(fc.tuple(name, tie("value")), { maxLength: 4 }).map((pairs) => ({
					text: `{${pairs.map(([key, item]) => `${key}:${item.text}`).join(",")}}`,
					members: pairs.reduce((sum, [, item]) => sum + 1 + item.members, 0),
				})),
			),
		})).value;
		const kept = (value: unknown): number =>
			Array.isArray(value)
				? value.reduce((sum: number, item) => sum + kept(item), 0)
				: value !== null && typeof value === "object"
					? Object.values(value).reduce((sum: number, item) => sum + 1 + kept(item), 0)
					: 0;
		fc.assert(
			fc.property(tree, ({ text, members }) => {
				const repeats = kept(JSON.parse(text)) < members;
				expect(repeatedMemberName(text) !== null).toBe(repeats);
			}),
			{ numRuns: 1000 },
		);
	});
});
