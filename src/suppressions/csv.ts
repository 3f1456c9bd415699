/**
 * A dependency-free CSV codec (RFC 4180) for exporting and importing suppression entries.
 * Pure functions: the callers own the I/O and the mapping between columns and entries.
 */

/** The columns of an export, in order; an import expects the same header. */
export const CSV_HEADER = [
	"email",
	"list",
	"scope",
	"reason",
	"source",
	"created_at",
	"updated_at",
	"expires_at",
] as const;

// Spreadsheets run a cell that starts with one of these as a formula (CSV injection). Leading
// apostrophes are included so that a field that already starts with `'=` gets its own extra `'`
// and restoreCsvField can always remove exactly one.
const FORMULA_START = /^'*[=+\-@\t\r]/;
const NEUTRALISED = /^'+[=+\-@\t\r]/;

// A leading BOM is quoted too: at the start of a file parseCsv would strip it as a byte order mark.
const NEEDS_QUOTES = /[",\r\n]|^[ \uFEFF]| $/;

function neutraliseFormula(text: string): string {
	return FORMULA_START.test(text) ? `'${text}` : text;
}

function encodeField(field: string | null): string {
	if (field === null) return "";
	const text = neutraliseFormula(field);
	return NEEDS_QUOTES.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

/**
 * One CSV record, terminated by CRLF. Null becomes an empty field; a field that a spreadsheet
 * would run as a formula gets one leading `'` (undo it with restoreCsvField).
 *
 * @example
 * formatCsvRow(["a@example.com", "say \"hi\", bye", null]) // 'a@example.com,"say ""hi"", bye",\r\n'
 * formatCsvRow(["=1+1"])                                  // "'=1+1\r\n"
 */
export function formatCsvRow(fields: readonly (string | null)[]): string {
	const encoded = fields.map(encodeField);
	// A lone empty field would be an empty line, which parseCsv skips.
	if (encoded.length === 1 && encoded[0] === "") return '""\r\n';
	return `${encoded.join(",")}\r\n`;
}

/**
 * Undoes the formula neutralisation of formatCsvRow on one parsed field.
 *
 * @example
 * restoreCsvField("'=1+1")  // "=1+1"
 * restoreCsvField("''=1+1") // "'=1+1"
 * restoreCsvField("'quoted") // "'quoted"
 */
export function restoreCsvField(field: string): string {
	return NEUTRALISED.test(field) ? field.slice(1) : field;
}

/** A record of parseCsv, with the 1-based physical line where it starts. */
interface CsvRow {
	line: number;
	fields: string[];
}

/** A record that parseCsv could not read, with the 1-based physical line where it starts. */
interface CsvError {
	line: number;
	message: string;
}

/** What parseCsv found: the good records and the bad ones, each in input order. */
export interface CsvParseResult {
	rows: CsvRow[];
	errors: CsvError[];
}

const UNTERMINATED = "A quoted field is not closed before the end of the input.";
const QUOTE_IN_UNQUOTED = "A double quote may only appear in a field enclosed in double quotes.";
const AFTER_CLOSING_QUOTE = "A closing double quote must be followed by a comma or a line end.";
const BARE_CR = "A carriage return outside double quotes must be followed by a line feed.";

/** Where parsing stands; `line` counts line feeds, so a lone CR does not start a line. */
interface Cursor {
	readonly text: string;
	pos: number;
	line: number;
}

type Read<T> = { ok: true; value: T } | { ok: false; message: string };

/**
 * Parses CSV text (RFC 4180, CRLF or LF line ends, an optional BOM). Empty lines are skipped. A
 * bad record becomes an error and parsing resumes on the next line, except after an unterminated
 * quote, which takes the rest of the input. Parsing stops once `maxRecords` records, good or bad,
 * are read, and a record stops being read at its field past `maxFields`: a line of 8 MiB of
 * commas would otherwise become eight million fields in a Worker's 128 MB. Fields are returned
 * raw: pass them to restoreCsvField.
 *
 * @example
 * parseCsv('email,reason\r\na@example.com,"bounced, twice"\r\n')
 * // { rows: [{ line: 1, fields: ["email", "reason"] },
 * //          { line: 2, fields: ["a@example.com", "bounced, twice"] }], errors: [] }
 */
export function parseCsv(
	text: string,
	maxRecords = Number.POSITIVE_INFINITY,
	maxFields = Number.POSITIVE_INFINITY,
): CsvParseResult {
	const cursor: Cursor = {
		text: text.startsWith("\uFEFF") ? text.slice(1) : text,
		pos: 0,
		line: 1,
	};
	const result: CsvParseResult = { rows: [], errors: [] };
	while (cursor.pos < cursor.text.length) {
		if (result.rows.length + result.errors.length >= maxRecords) break;
		if (skipLineEnd(cursor)) continue;
		const line = cursor.line;
		const record = readRecord(cursor, maxFields);
		if (record.ok) {
			result.rows.push({ line, fields: record.value });
		} else {
			result.errors.push({ line, message: record.message });
			skipRestOfLine(cursor);
		}
	}
	return result;
}

/** Consumes an LF or CRLF at the cursor, if there is one. */
function skipLineEnd(cursor: Cursor): boolean {
	const { text, pos } = cursor;
	const width = text[pos] === "\n" ? 1 : text.startsWith("\r\n", pos) ? 2 : 0;
	if (width === 0) return false;
	cursor.pos += width;
	cursor.line += 1;
	return true;
}

function skipRestOfLine(cursor: Cursor): void {
	const end = cursor.text.indexOf("\n", cursor.pos);
	cursor.pos = end === -1 ? cursor.text.length : end + 1;
	if (end !== -1) cursor.line += 1;
}

/** Reads fields up to and including the record's line end, or until it has too many. */
function readRecord(cursor: Cursor, maxFields: number): Read<string[]> {
	const fields: string[] = [];
	for (;;) {
		const quoted = cursor.text[cursor.pos] === '"';
		const field = quoted ? readQuoted(cursor) : readUnquoted(cursor);
		if (!field.ok) return field;
		if (fields.length === maxFields) {
			return { ok: false, message: `A record may have at most ${maxFields} fields.` };
		}
		fields.push(field.value);
		if (cursor.pos >= cursor.text.length || skipLineEnd(cursor)) return { ok: true, value: fields };
		const next = cursor.text[cursor.pos];
		if (next !== ",") return { ok: false, message: separatorProblem(next, quoted) };
		cursor.pos += 1;
	}
}

/** Why a field is followed by `next` instead of a comma or a line end. */
function separatorProblem(next: string | undefined, quoted: boolean): string {
	if (next === "\r") return BARE_CR;
	// An unquoted field stops only at a comma, CR, LF or quote, so here it stopped at a quote.
	return quoted ? AFTER_CLOSING_QUOTE : QUOTE_IN_UNQUOTED;
}

const UNQUOTED = /[^",\r\n]*/y;

/** Reads up to the next comma, CR, LF or quote; the caller judges what stopped it. */
function readUnquoted(cursor: Cursor): Read<string> {
	UNQUOTED.lastIndex = cursor.pos;
	const value = UNQUOTED.exec(cursor.text)?.[0] ?? "";
	cursor.pos += value.length;
	return { ok: true, value };
}

/** Reads a quoted field from its opening quote through its closing quote. */
function readQuoted(cursor: Cursor): Read<string> {
	const { text } = cursor;
	let value = "";
	let start = cursor.pos + 1;
	for (;;) {
		const quote = text.indexOf('"', start);
		const chunk = text.slice(start, quote === -1 ? text.length : quote);
		cursor.line += countLineFeeds(chunk);
		value += chunk;
		if (quote === -1) {
			cursor.pos = text.length;
			return { ok: false, message: UNTERMINATED };
		}
		if (text[quote + 1] !== '"') {
			cursor.pos = quote + 1;
			return { ok: true, value };
		}
		value += '"';
		start = quote + 2;
	}
}

function countLineFeeds(text: string): number {
	let count = 0;
	for (let at = text.indexOf("\n"); at !== -1; at = text.indexOf("\n", at + 1)) count += 1;
	return count;
}
