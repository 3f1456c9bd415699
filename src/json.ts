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
 * holds such a number pays for the reviver (several times a plain parse, timed in Node), after a
 * plain parse. A text nested too deep for
 * the reviver's recursion is parsed plainly: it is refused anyway, for its depth.
 *
 * @example
 * JSON.stringify(parseJson('{"id": 12345678901234567890}')) // '{"id":12345678901234567890}'
 * @throws SyntaxError as JSON.parse
 */
export function parseJson(text: string): unknown {
	if (!LONG_NUMBER.test(text)) return JSON.parse(text);
	// Parsed plainly first: text that is not JSON throws here, before the token scan, which is
	// linear only in valid JSON (an unterminated string makes its regex rescan to the end).
	const plain = JSON.parse(text);
	if (!holdsInexactNumber(text)) return plain;
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
	const digits = significantDigits(source);
	return digits > 15 || !Number.isFinite(value) || (digits > 0 && Math.abs(value) < MIN_NORMAL);
}

/**
 * How many significant digits the mantissa of a JSON number has: leading and trailing zeros are
 * not. One pass each way (a regex such as /0+$/ would rescan every run of zeros: quadratic).
 */
function significantDigits(source: string): number {
	const exponent = source.search(/[eE]/);
	const mantissa = exponent === -1 ? source : source.slice(0, exponent);
	let first = 0;
	while (first < mantissa.length && !isNonZeroDigit(mantissa.charCodeAt(first))) first++;
	let last = mantissa.length - 1;
	while (last >= first && !isNonZeroDigit(mantissa.charCodeAt(last))) last--;
	let count = 0;
	for (let i = first; i <= last; i++) if (isDigit(mantissa.charCodeAt(i))) count++;
	return count;
}

function isDigit(code: number): boolean {
	return code >= 0x30 && code <= 0x39;
}

function isNonZeroDigit(code: number): boolean {
	return code >= 0x31 && code <= 0x39;
}

/** Whether `value` is a number kept as its source text by {@link parseJson}. */
export function isRawJson(value: unknown): boolean {
	return native.isRawJSON(value);
}

/** A JSON string, or the punctuation that tells a member name (a string before `:`) from a value. */
const STRUCTURE = /"[^"\\]*(?:\\.[^"\\]*)*"|[{}[\]:]/g;

/**
 * The first member name that some object of a valid JSON text holds twice, or null. JSON.parse
 * keeps the last value of a repeated name without a trace, so the others would be lost and two
 * different texts would read as one value. One pass over the text's strings and brackets; a name
 * is decoded only when it holds an escape.
 *
 * @example
 * repeatedMemberName('{"a":1,"b":{"a":2},"\\u0061":3}') // "a"
 */
export function repeatedMemberName(text: string): string | null {
	// The names seen in each enclosing object; null for an enclosing array.
	const open: (Set<string> | null)[] = [];
	let last = "";
	for (const [token] of text.matchAll(STRUCTURE)) {
		if (token.charCodeAt(0) === 0x22) {
			last = token;
			continue;
		}
		if (token === ":") {
			const name = last.includes("\\") ? (JSON.parse(last) as string) : last.slice(1, -1);
			const names = open[open.length - 1];
			if (names?.has(name)) return name;
			names?.add(name);
		} else if (token === "{") open.push(new Set());
		else if (token === "[") open.push(null);
		else open.pop();
	}
	return null;
}

/**
 * A member name as a message quotes it: in JSON, cut at 100 characters.
 *
 * @example
 * quotedName("list") // "\"list\""
 */
export function quotedName(name: string): string {
	return JSON.stringify(name.length > 100 ? `${name.slice(0, 100)}…` : name);
}

/** @throws SyntaxError when some object of the valid JSON `text` names a member twice */
function refuseRepeatedMembers(text: string): void {
	const repeated = repeatedMemberName(text);
	if (repeated !== null) {
		throw new SyntaxError(`an object names the member ${quotedName(repeated)} more than once`);
	}
}

/**
 * {@link parseJson} for a callback body, refusing an object that names a member twice: which of
 * its values Tencent meant is unknowable, and keeping one would silently drop the other.
 *
 * @throws SyntaxError as JSON.parse, and for a repeated member name
 */
export function parseCallbackJson(text: string): unknown {
	const value = parseJson(text);
	refuseRepeatedMembers(text);
	return value;
}

/**
 * JSON.parse for an API request body or an imported line, refusing an object that names a member
 * twice, as a repeated query parameter is refused: JSON.parse would keep the last value without a
 * trace, so `{"expiresAt":"2030-01-01","expiresAt":null}` would store an entry that never expires
 * and an import line naming two addresses would import one of them.
 *
 * @throws SyntaxError as JSON.parse, and for a repeated member name
 * @example
 * parseUniqueJson('{"list":"manual","list":"bounce"}') // throws
 */
export function parseUniqueJson(text: string): unknown {
	const value = JSON.parse(text);
	refuseRepeatedMembers(text);
	return value;
}
