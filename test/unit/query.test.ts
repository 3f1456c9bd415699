import { describe, expect, it } from "vitest";
import * as z from "zod/mini";
import { ApiError } from "../../src/errors";
import {
	decodeCursor,
	encodeCursor,
	limitParam,
	parseQuery,
	type RawQuery,
	rowsThatFit,
	timeParam,
} from "../../src/query";

const TIME_MESSAGE = "must be an ISO 8601 time or Unix seconds, at most the end of year 9999";
const LIMIT_MESSAGE = "must be an integer from 1 to 1000";

function time(raw: string): number | string {
	const parsed = z.safeParse(timeParam, raw);
	return parsed.success ? parsed.data : (parsed.error.issues[0]?.message ?? "no issue");
}

function limit(raw: string | undefined): number | string {
	const parsed = z.safeParse(limitParam, raw);
	return parsed.success ? parsed.data : (parsed.error.issues[0]?.message ?? "no issue");
}

/** The ApiError that `fn` throws. */
function thrown(fn: () => unknown): ApiError {
	try {
		fn();
	} catch (error) {
		expect(error).toBeInstanceOf(ApiError);
		return error as ApiError;
	}
	throw new Error("expected an ApiError, nothing was thrown");
}

describe("timeParam", () => {
	it.each([
		["2024-01-02T03:04:05Z", 1704164645],
		["2024-01-02T03:04:05z", 1704164645],
		["2024-01-02t03:04:05Z", 1704164645],
		["2024-01-02T03:04:05+08:00", 1704135845],
		["2024-01-02T03:04:05+0800", 1704135845],
		["2024-01-02T03:04:05-01:30", 1704170045],
		// A fraction of a second rounds up (see timeParam).
		["2024-01-02T03:04:05.999Z", 1704164646],
		["2024-01-02T03:04:05.123456789Z", 1704164646],
		["2024-01-02T03:04:05.000Z", 1704164645],
		// Finer than a millisecond, which Date.parse drops: still a fraction, still rounded up.
		["2024-01-02T03:04:05.0001Z", 1704164646],
		["2024-01-02T03:04:05.000000001+08:00", 1704135846],
		["2024-01-02T03:04:05.000000000Z", 1704164645],
		["2024-01-02T03:04Z", 1704164640],
		["2024-01-02 03:04:05Z", 1704164645],
		["2024-01-02", 1704153600],
		["2024-02-29", 1709164800],
		["1970-01-01T00:00:00Z", 0],
		["1970-01-01T08:00:00+08:00", 0],
	])("parses ISO 8601 %s", (raw, seconds) => {
		expect(time(raw)).toBe(seconds);
	});

	it("reads a time without an offset as UTC (the Workers runtime's time zone)", () => {
		expect(time("2024-01-02T03:04:05")).toBe(1704164645);
		expect(time("2024-01-02T03:04")).toBe(1704164640);
	});

	it.each([
		["1704164645", 1704164645],
		["0", 0],
		["253402300799", 253402300799],
		["000000000001", 1],
		["  1704164645  ", 1704164645],
	])("parses Unix seconds %j", (raw, seconds) => {
		expect(time(raw)).toBe(seconds);
	});

	it("refuses a time after the end of year 9999, in either form", () => {
		expect(time("253402300800")).toBe(TIME_MESSAGE);
		expect(time("999999999999")).toBe(TIME_MESSAGE);
		expect(time("9999-12-31T23:59:59-00:01")).toBe(TIME_MESSAGE);
		expect(time("9999-12-31T23:59:59Z")).toBe(253402300799);
	});

	it("takes up to 12 digits as seconds and refuses 13 or more (milliseconds)", () => {
		expect(time("1704164645000")).toBe(TIME_MESSAGE);
		expect(time("0001704164645")).toBe(TIME_MESSAGE);
		// So an ISO 8601 basic-format date is read as seconds, not as a date.
		expect(time("20240102")).toBe(20240102);
	});

	it.each([
		"",
		"   ",
		"garbage",
		"-1",
		"+1704164645",
		"1704164645.5",
		"1e9",
		"0x10",
		"1969-12-31",
		"1969-12-31T23:59:59Z",
		"0000-01-01",
		"2024-13-01",
		"2024-01-32",
		"2024-01-01T25:00:00Z",
		"2024-01-01T03:04:60Z",
		"2024-1-2",
		"2024-01-02T03",
		"2024-01-02T03:04:05+8",
		"2024-01-02T03:04:05.1234567890Z",
		"Tue, 02 Jan 2024 03:04:05 GMT",
		"2024-01-02T03:04:05Z trailing",
	])("refuses %j", (raw) => {
		expect(time(raw)).toBe(TIME_MESSAGE);
	});

	it("names the %2B of an offset whose + a query string read as a space", () => {
		const hint = `${TIME_MESSAGE} (a query string reads + as a space: send the + of an offset as %2B)`;
		expect(time("2024-01-02T03:04:05 08:00")).toBe(hint);
		expect(time("2024-01-02 03:04 0800")).toBe(hint);
		expect(time("2024-01-02T03:04:05 08")).toBe(TIME_MESSAGE);
	});

	// The ISO pattern checks only the shape of a date, and Date.parse in V8 rolls impossible days
	// over into the next month: the calendar check must refuse them.
	it.each([["2024-02-30"], ["2023-02-29"], ["2024-04-31T00:00:00Z"]])(
		"refuses the impossible calendar date %s",
		(raw) => {
			expect(time(raw)).toBe(TIME_MESSAGE);
		},
	);
});

describe("limitParam", () => {
	it("defaults to 100", () => {
		expect(limit(undefined)).toBe(100);
	});

	it.each([
		["1", 1],
		["100", 100],
		["999", 999],
		["1000", 1000],
		["0100", 100],
	])("accepts %j", (raw, value) => {
		expect(limit(raw)).toBe(value);
	});

	it.each([
		"0",
		"0000",
		"1001",
		"9999",
		"01000",
		"10000",
		"",
		"-1",
		"+5",
		"1.5",
		"1e2",
		" 5",
		"five",
	])("refuses %j", (raw) => {
		expect(limit(raw)).toBe(LIMIT_MESSAGE);
	});
});

describe("parseQuery", () => {
	const schema = z.strictObject({
		since: z.optional(timeParam),
		name: z.optional(z.string().check(z.maxLength(3, { error: "too long" }))),
		limit: limitParam,
	});

	it("parses known parameters", () => {
		expect(parseQuery(schema, { since: "1704164645", name: "abc", limit: "5" })).toEqual({
			since: 1704164645,
			name: "abc",
			limit: 5,
		});
	});

	it("applies defaults and ignores parameters given as undefined", () => {
		expect(parseQuery(schema, {})).toEqual({ limit: 100 });
		expect(parseQuery(schema, { name: undefined, since: undefined })).toEqual({ limit: 100 });
	});

	it("refuses an unknown parameter with 400 invalid_query", () => {
		const error = thrown(() => parseQuery(schema, { limit: "5", sinse: "1" }));
		expect(error.status).toBe(400);
		expect(error.code).toBe("invalid_query");
		expect(error.message).toBe("The query parameters are not valid");
		expect(error.issues).toEqual([{ path: "sinse", message: "is not a known parameter" }]);
	});

	it("names every unknown parameter", () => {
		const error = thrown(() => parseQuery(schema, { a: "1", b: "2" }));
		expect(error.issues).toEqual([
			{ path: "a", message: "is not a known parameter" },
			{ path: "b", message: "is not a known parameter" },
		]);
	});

	it("refuses a repeated parameter, even when each value is valid", () => {
		const query: RawQuery = { limit: ["5", "5"], name: "abc" };
		const error = thrown(() => parseQuery(schema, query));
		expect(error.status).toBe(400);
		expect(error.code).toBe("invalid_query");
		expect(error.issues).toEqual([{ path: "limit", message: "must be given once" }]);
	});

	it("gives one issue per bad parameter", () => {
		const query: RawQuery = {
			since: "yesterday",
			name: "abcd",
			limit: "0",
			extra: "x",
			repeated: ["1", "2"],
		};
		const error = thrown(() => parseQuery(schema, query));
		expect(error.status).toBe(400);
		expect(error.code).toBe("invalid_query");
		expect(error.issues).toHaveLength(5);
		expect(error.issues).toEqual(
			expect.arrayContaining([
				{ path: "repeated", message: "must be given once" },
				{ path: "since", message: TIME_MESSAGE },
				{ path: "name", message: "too long" },
				{ path: "limit", message: LIMIT_MESSAGE },
				{ path: "extra", message: "is not a known parameter" },
			]),
		);
		// Repeated parameters are found before the schema runs.
		expect(error.issues?.[0]).toEqual({ path: "repeated", message: "must be given once" });
	});
});

describe("cursors", () => {
	it("encode to URL-safe base64 without padding", () => {
		expect(encodeCursor([1700000000, 42])).toBe("WzE3MDAwMDAwMDAsNDJd");
		expect(encodeCursor([1, 2])).toBe("WzEsMl0");
		// '["a?b>"]' is "WyJhP2I+Il0=" and '["?"]' is "WyI/Il0=" in standard base64.
		expect(encodeCursor(["a?b>"])).toBe("WyJhP2I-Il0");
		expect(encodeCursor(["?"])).toBe("WyI_Il0");
	});

	it("round-trip", () => {
		const unicode = ["用户@例子.广告", "josé@bücher.de", "😀"];
		for (const parts of [
			[1700000000, 42],
			[0, 0],
			["a?b>", 1],
			["?", "/", "+"],
			["é"],
			[],
			unicode,
		]) {
			const cursor = encodeCursor(parts);
			expect(cursor).toMatch(/^[A-Za-z0-9_-]*$/);
			expect(decodeCursor(cursor)).toEqual(parts);
		}
	});

	it("decode standard base64 and padding too", () => {
		expect(decodeCursor("WzEsMl0=")).toEqual([1, 2]);
		expect(decodeCursor("WyJhP2I+Il0=")).toEqual(["a?b>"]);
	});

	it.each([
		["empty", ""],
		["not base64", "!!!"],
		["impossible base64 length", "WzEsM"],
		["base64 of non-JSON", btoa("not json")],
		["JSON object, not array", btoa('{"a":1}')],
		["JSON number", btoa("42")],
		["JSON string", btoa('"[1,2]"')],
		["JSON null", btoa("null")],
		["truncated JSON", btoa("[1,2")],
	])("give null for garbage: %s", (_, cursor) => {
		expect(decodeCursor(cursor)).toBeNull();
	});
});

describe("rowsThatFit", () => {
	const sized = (...sizes: number[]) => sizes.map((size) => ({ size }));

	it("takes rows while their sizes add up to at most the bytes given", () => {
		expect(rowsThatFit(sized(10, 20, 30), 3, 60)).toBe(3);
		expect(rowsThatFit(sized(10, 20, 30), 3, 59)).toBe(2);
		expect(rowsThatFit(sized(10, 20, 30), 3, 30)).toBe(2);
		expect(rowsThatFit(sized(10, 20, 30), 3, 29)).toBe(1);
	});

	it("always takes the first row, however large", () => {
		expect(rowsThatFit(sized(100, 1), 2, 10)).toBe(1);
	});

	it("takes at most the limit, and nothing of nothing", () => {
		expect(rowsThatFit(sized(1, 1, 1), 2, 100)).toBe(2);
		expect(rowsThatFit([], 5, 100)).toBe(0);
	});
});
