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
 * Text that may hold a number a double cannot hold exactly: a run of at least 16 digits and dots,
 * or an exponent of three digits. Text without one is parsed at full speed.
 */
const LONG_NUMBER = /[\d.]{16}|[eE][+-]?\d{3}/;

/** The smallest positive normal double: below it a double keeps fewer digits, down to none. */
const MIN_NORMAL = 2.2250738585072014e-308;

/**
 * JSON.parse, except that a number a double cannot hold exactly stays as its source text (a
 * frozen `JSON.rawJSON` value, written back unchanged by JSON.stringify): an integer beyond 2^53,
 * a number of more than 15 significant digits, or one beyond a double's range (which would turn
 * into Infinity, written as null, or into 0). Every other number is a plain number, and a schema
 * that wants one refuses such a value as it refused the rounded number before.
 *
 * @example
 * JSON.stringify(parseJson('{"id": 12345678901234567890}')) // '{"id":12345678901234567890}'
 * @throws SyntaxError as JSON.parse
 */
export function parseJson(text: string): unknown {
	return LONG_NUMBER.test(text) ? native.parse(text, keepInexact) : JSON.parse(text);
}

function keepInexact(_key: string, value: unknown, context?: { source?: string }): unknown {
	const source = context?.source;
	if (typeof value !== "number" || source === undefined) return value;
	return isInexact(value, source) ? native.rawJSON(source) : value;
}

function isInexact(value: number, source: string): boolean {
	if (/^-?\d+$/.test(source)) return !Number.isSafeInteger(value);
	const digits = source
		.replace(/[eE].*$/, "")
		.replace(/\D/g, "")
		.replace(/^0+/, "");
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
