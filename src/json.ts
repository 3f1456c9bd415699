// JSON.parse's source text access and JSON.rawJSON (ES2026, in workerd's V8) are not yet in
// TypeScript's lib.
const native = JSON as unknown as {
	parse(
		text: string,
		reviver: (key: string, value: unknown, context?: { source?: string }) => unknown,
	): unknown;
	rawJSON(text: string): object;
	isRawJSON(value: unknown): boolean;
};

/**
 * Text that may hold a number a double cannot hold exactly: where a value may start (the text's
 * start, or after `:`, `,` or `[`), a run of at least 16 digits and dots, or a mantissa with an
 * exponent of three digits. Tencent's callbacks have neither (their long digit runs and hex ids sit
 * inside strings) and are parsed at full speed.
 */
const LONG_NUMBER = /(?:^|[:,[])\s*-?(?:[\d.]{16}|[\d.]*[eE][+-]?\d{3})/;

/** The JSON strings and the number-like runs of a text, so numbers inside strings are skipped. */
const TOKENS = /"[^"\\]*(?:\\.[^"\\]*)*"|-?\d[\d.eE+-]*/g;

/** The smallest positive normal double: below it a double keeps fewer digits, down to none. */
const MIN_NORMAL = 2.2250738585072014e-308;

/**
 * JSON.parse, except that a number a double cannot hold exactly stays as its source text (a
 * frozen `JSON.rawJSON` value, written back unchanged by JSON.stringify): an integer beyond 2^53,
 * a number of more than 15 significant digits, or one beyond a double's range (which would turn
 * into Infinity, written as null, or into 0). Every other number is a plain number, and a schema
 * that wants one refuses such a value as it refused the rounded number before. Only a text that
 * holds such a number pays for the reviver (several times a plain parse, timed in Node). A text nested too deep for
 * the reviver's recursion is parsed plainly: it is refused anyway, for its depth.
 *
 * @example
 * JSON.stringify(parseJson('{"id": 12345678901234567890}')) // '{"id":12345678901234567890}'
 * @throws SyntaxError as JSON.parse
 */
export function parseJson(text: string): unknown {
	if (!LONG_NUMBER.test(text) || !holdsInexactNumber(text)) return JSON.parse(text);
	try {
		return native.parse(text, keepInexact);
	} catch (error) {
		if (error instanceof RangeError) return JSON.parse(text);
		throw error;
	}
}

function holdsInexactNumber(text: string): boolean {
	for (const [token] of text.matchAll(TOKENS)) {
		if (token.charCodeAt(0) !== 0x22 && isInexact(Number(token), token)) return true;
	}
	return false;
}

function keepInexact(_key: string, value: unknown, context?: { source?: string }): unknown {
	const source = context?.source;
	if (typeof value !== "number" || source === undefined) return value;
	return isInexact(value, source) ? native.rawJSON(source) : value;
}

/** Whether the number written `source` is not exactly `value`, the double JSON.parse makes of it. */
function isInexact(value: number, source: string): boolean {
	if (/^-?\d+$/.test(source)) return !Number.isSafeInteger(value);
	// Significant digits: leading and trailing zeros of the mantissa are not.
	const digits = source
		.replace(/[eE].*$/, "")
		.replace(/\D/g, "")
		.replace(/^0+|0+$/g, "");
	return (
		digits.length > 15 ||
		!Number.isFinite(value) ||
		(digits.length > 0 && Math.abs(value) < MIN_NORMAL)
	);
}

/** Whether `value` is a number kept as its source text by {@link parseJson}. */
export function isRawJson(value: unknown): boolean {
	return native.isRawJSON(value);
}
