import { describe, expect, it } from "vitest";
import { CSV_HEADER, formatCsvRow, parseCsv, restoreCsvField } from "../../src/suppressions/csv";

const UNTERMINATED = "A quoted field is not closed before the end of the input.";
const QUOTE_IN_UNQUOTED = "A double quote may only appear in a field enclosed in double quotes.";
const AFTER_CLOSING_QUOTE = "A closing double quote must be followed by a comma or a line end.";
const BARE_CR = "A carriage return outside double quotes must be followed by a line feed.";

/** Values chosen to break a naive CSV writer, a naive reader or the formula guard. */
const HOSTILE = [
	"",
	" ",
	"  ",
	"plain",
	"a@example.com",
	"a,b",
	",",
	",,,",
	'"',
	'""',
	'say "hi"',
	'"quoted"',
	"line\nfeed",
	"carriage\rreturn",
	"crlf\r\nend",
	"\n",
	"\r",
	"\r\n",
	"\n\n\n",
	"trailing newline\n",
	" leading space",
	"trailing space ",
	"\ttab inside",
	"tab at end\t",
	"=1+1",
	"+1",
	"-1",
	"@SUM(A1:A2)",
	"\t=cmd",
	"\r=cmd",
	'=HYPERLINK("http://evil.example","click")',
	"'",
	"''",
	"'plain",
	"'=1+1",
	"''+1",
	"'''-1",
	"'@",
	"'\t",
	"'\r",
	"a'=b",
	"=",
	"-",
	"Müller@bücher.de",
	"日本語の理由",
	"emoji 😀👍🏽 and ZWJ 👩‍👩‍👧",
	"\uFEFF",
	"\uFEFFbom first",
	"bom \uFEFF inside",
	"\u2028line separator",
	"nul \u0000 inside",
	"x".repeat(10_000),
	`${'a,"\n'.repeat(500)}=`,
] as const;

/** Code points in hex, so that a failure shows which of two look-alike strings is which. */
function codePoints(text: string): string[] {
	return Array.from(text, (char) => (char.codePointAt(0) ?? 0).toString(16));
}

/** Formats then parses one row and restores its fields. */
function roundTrip(fields: readonly (string | null)[]): string[] {
	const { rows, errors } = parseCsv(formatCsvRow(fields));
	expect(errors).toEqual([]);
	expect(rows.map((row) => row.line)).toEqual([1]);
	return (rows[0]?.fields ?? []).map(restoreCsvField);
}

describe("CSV_HEADER", () => {
	it("lists the export columns in order", () => {
		expect(CSV_HEADER).toEqual([
			"email",
			"list",
			"scope",
			"reason",
			"source",
			"created_at",
			"updated_at",
			"expires_at",
		]);
	});

	it("formats as a plain header line", () => {
		expect(formatCsvRow(CSV_HEADER)).toBe(
			"email,list,scope,reason,source,created_at,updated_at,expires_at\r\n",
		);
	});
});

describe("formatCsvRow", () => {
	it("joins plain fields with commas and ends the record with CRLF", () => {
		expect(formatCsvRow(["a@example.com", "bounce", "*"])).toBe("a@example.com,bounce,*\r\n");
		expect(formatCsvRow(["only"])).toBe("only\r\n");
	});

	it("quotes a field with a comma", () => {
		expect(formatCsvRow(["a,b", "c"])).toBe('"a,b",c\r\n');
		expect(formatCsvRow([","])).toBe('","\r\n');
	});

	it("quotes a field with a double quote and doubles the quote", () => {
		expect(formatCsvRow(['say "hi"'])).toBe('"say ""hi"""\r\n');
		expect(formatCsvRow(['"'])).toBe('""""\r\n');
	});

	it("quotes a field with CR, LF or CRLF and keeps the line break as is", () => {
		expect(formatCsvRow(["a\rb"])).toBe('"a\rb"\r\n');
		expect(formatCsvRow(["a\nb"])).toBe('"a\nb"\r\n');
		expect(formatCsvRow(["a\r\nb"])).toBe('"a\r\nb"\r\n');
	});

	it("quotes a field that starts or ends with a space, but not one with a space inside", () => {
		expect(formatCsvRow([" a"])).toBe('" a"\r\n');
		expect(formatCsvRow(["a "])).toBe('"a "\r\n');
		expect(formatCsvRow([" "])).toBe('" "\r\n');
		expect(formatCsvRow(["a b"])).toBe("a b\r\n");
		expect(formatCsvRow(["a\tb\t"])).toBe("a\tb\t\r\n");
	});

	it("quotes a field that starts with a BOM, which a reader would strip at the start of a file", () => {
		expect(formatCsvRow(["\uFEFFx", "y"])).toBe('"\uFEFFx",y\r\n');
		expect(formatCsvRow(["x\uFEFF"])).toBe("x\uFEFF\r\n");
	});

	it("writes null and the empty string as an empty field", () => {
		expect(formatCsvRow([null, "a", null])).toBe(",a,\r\n");
		expect(formatCsvRow(["", "a", ""])).toBe(",a,\r\n");
		expect(formatCsvRow([null, null])).toBe(",\r\n");
	});

	it("quotes a lone empty field so that the record is not an empty line", () => {
		expect(formatCsvRow([""])).toBe('""\r\n');
		expect(formatCsvRow([null])).toBe('""\r\n');
	});

	it("writes an empty line for no fields", () => {
		expect(formatCsvRow([])).toBe("\r\n");
	});

	it("leaves Unicode alone", () => {
		expect(formatCsvRow(["Müller@bücher.de", "日本語", "😀👍🏽"])).toBe(
			"Müller@bücher.de,日本語,😀👍🏽\r\n",
		);
	});

	it("prefixes each formula start with an apostrophe", () => {
		expect(formatCsvRow(["=1+1"])).toBe("'=1+1\r\n");
		expect(formatCsvRow(["+1"])).toBe("'+1\r\n");
		expect(formatCsvRow(["-1"])).toBe("'-1\r\n");
		expect(formatCsvRow(["@SUM(A1)"])).toBe("'@SUM(A1)\r\n");
		expect(formatCsvRow(["\t=1"])).toBe("'\t=1\r\n");
		expect(formatCsvRow(["\r=1"])).toBe('"\'\r=1"\r\n');
		expect(formatCsvRow(["="])).toBe("'=\r\n");
	});

	it("neutralises before quoting", () => {
		expect(formatCsvRow(['=HYPERLINK("x","y")'])).toBe('"\'=HYPERLINK(""x"",""y"")"\r\n');
		expect(formatCsvRow(["-1 "])).toBe('"\'-1 "\r\n');
	});

	it("adds one more apostrophe to apostrophes before a formula start", () => {
		expect(formatCsvRow(["'=1"])).toBe("''=1\r\n");
		expect(formatCsvRow(["''+1"])).toBe("'''+1\r\n");
		expect(formatCsvRow(["'-"])).toBe("''-\r\n");
		expect(formatCsvRow(["'@x"])).toBe("''@x\r\n");
		expect(formatCsvRow(["'\tx"])).toBe("''\tx\r\n");
		expect(formatCsvRow(["'\rx"])).toBe("\"''\rx\"\r\n");
	});

	it("leaves fields alone that do not start like a formula", () => {
		expect(formatCsvRow(["'"])).toBe("'\r\n");
		expect(formatCsvRow(["''"])).toBe("''\r\n");
		expect(formatCsvRow(["'plain"])).toBe("'plain\r\n");
		expect(formatCsvRow(["a=b", "1+1", "x-1", "a@b.c"])).toBe("a=b,1+1,x-1,a@b.c\r\n");
		expect(formatCsvRow([" =1"])).toBe('" =1"\r\n');
		expect(formatCsvRow(["\n=1"])).toBe('"\n=1"\r\n');
	});
});

describe("restoreCsvField", () => {
	it("removes one apostrophe before a formula start", () => {
		expect(restoreCsvField("'=1+1")).toBe("=1+1");
		expect(restoreCsvField("'+1")).toBe("+1");
		expect(restoreCsvField("'-1")).toBe("-1");
		expect(restoreCsvField("'@x")).toBe("@x");
		expect(restoreCsvField("'\tx")).toBe("\tx");
		expect(restoreCsvField("'\rx")).toBe("\rx");
		expect(restoreCsvField("''=1")).toBe("'=1");
		expect(restoreCsvField("'''+1")).toBe("''+1");
	});

	it("leaves every other field alone", () => {
		for (const field of ["", "'", "''", "'plain", "=1", "+1", "a'=b", " '=1", "'\n=1", "'a=1"]) {
			expect(restoreCsvField(field)).toBe(field);
		}
	});

	it("undoes formatCsvRow for every hostile value on its own", () => {
		for (const value of HOSTILE) {
			expect(codePoints(roundTrip([value]).join(""))).toEqual(codePoints(value));
		}
	});
});

describe("round trip", () => {
	it("gives back a row of all hostile values", () => {
		expect(HOSTILE.length).toBeGreaterThanOrEqual(30);
		expect(roundTrip(HOSTILE)).toEqual([...HOSTILE]);
	});

	it("gives back each hostile value in each position of a row", () => {
		for (const value of HOSTILE) {
			expect(roundTrip([value, "middle", value, value])).toEqual([value, "middle", value, value]);
		}
	});

	it("gives back null as the empty string", () => {
		expect(roundTrip([null, "a", null])).toEqual(["", "a", ""]);
		expect(roundTrip([null])).toEqual([""]);
	});

	it("gives back a whole file with the line where each record starts", () => {
		const records = HOSTILE.map((value, index) => [`${index}@example.com`, value, value]);
		const text = [CSV_HEADER, ...records].map(formatCsvRow).join("");
		let line = 1;
		const expected = [CSV_HEADER, ...records].map((fields) => {
			const row = { line, fields: [...fields] };
			line += formatCsvRow(fields).split("\n").length - 1;
			return row;
		});
		const { rows, errors } = parseCsv(`\uFEFF${text}`);
		expect(errors).toEqual([]);
		const restored = rows.map((row) => ({
			line: row.line,
			fields: row.fields.map(restoreCsvField),
		}));
		expect(restored).toEqual(expected);
		// The hostile values hold line breaks, so records cannot all start on consecutive lines.
		expect(rows.at(-1)?.line).toBeGreaterThan(records.length + 1);
	});
});

describe("parseCsv", () => {
	it("reads LF and CRLF line ends alike", () => {
		const expected = {
			rows: [
				{ line: 1, fields: ["email", "list"] },
				{ line: 2, fields: ["a@example.com", "bounce"] },
			],
			errors: [],
		};
		expect(parseCsv("email,list\na@example.com,bounce\n")).toEqual(expected);
		expect(parseCsv("email,list\r\na@example.com,bounce\r\n")).toEqual(expected);
		expect(parseCsv("email,list\r\na@example.com,bounce\n")).toEqual(expected);
	});

	it("stops after maxRecords records, good or bad", () => {
		expect(parseCsv('a\n\nb"\nc\nd\n', 2)).toEqual({
			rows: [{ line: 1, fields: ["a"] }],
			errors: [{ line: 3, message: QUOTE_IN_UNQUOTED }],
		});
	});

	it("stops reading a record at its field past maxFields, and goes on at the next line", () => {
		expect(parseCsv('a,b,c\n,,,,\n"x",y\n"p,q",r,"s"\n', Number.POSITIVE_INFINITY, 2)).toEqual({
			rows: [{ line: 3, fields: ["x", "y"] }],
			errors: [
				{ line: 1, message: "A record may have at most 2 fields." },
				{ line: 2, message: "A record may have at most 2 fields." },
				{ line: 4, message: "A record may have at most 2 fields." },
			],
		});
	});

	it("reads the last record without a line end", () => {
		expect(parseCsv("a\nb")).toEqual({
			rows: [
				{ line: 1, fields: ["a"] },
				{ line: 2, fields: ["b"] },
			],
			errors: [],
		});
		expect(parseCsv('a,"b"')).toEqual({ rows: [{ line: 1, fields: ["a", "b"] }], errors: [] });
	});

	it("strips a BOM at the start only", () => {
		expect(parseCsv("\uFEFFemail,list\n")).toEqual({
			rows: [{ line: 1, fields: ["email", "list"] }],
			errors: [],
		});
		expect(parseCsv("a\n\uFEFFb\n").rows).toEqual([
			{ line: 1, fields: ["a"] },
			{ line: 2, fields: ["\uFEFFb"] },
		]);
		expect(parseCsv("\uFEFF\uFEFFa").rows).toEqual([{ line: 1, fields: ["\uFEFFa"] }]);
	});

	it("finds nothing in empty input", () => {
		for (const text of ["", "\uFEFF", "\n", "\r\n", "\n\r\n\n"]) {
			expect(parseCsv(text)).toEqual({ rows: [], errors: [] });
		}
	});

	it("skips empty lines and keeps counting them", () => {
		expect(parseCsv("\na\n\n\r\nb\r\n\n")).toEqual({
			rows: [
				{ line: 2, fields: ["a"] },
				{ line: 5, fields: ["b"] },
			],
			errors: [],
		});
	});

	it("keeps lines of spaces and of commas as records", () => {
		expect(parseCsv(" \n,\na,\n,a\n").rows).toEqual([
			{ line: 1, fields: [" "] },
			{ line: 2, fields: ["", ""] },
			{ line: 3, fields: ["a", ""] },
			{ line: 4, fields: ["", "a"] },
		]);
	});

	it("keeps spaces around unquoted fields", () => {
		expect(parseCsv(" a , b \n").rows).toEqual([{ line: 1, fields: [" a ", " b "] }]);
	});

	it("reads quoted fields with commas, doubled quotes and empty content", () => {
		expect(parseCsv('"a,b","say ""hi""","",""""\n').rows).toEqual([
			{ line: 1, fields: ["a,b", 'say "hi"', "", '"'] },
		]);
	});

	it("reads a quoted field over several lines and numbers the next records right", () => {
		const text = 'x,"one\ntwo\r\nthree",y\r\nnext,1\n"\n\n",z\nlast\n';
		expect(parseCsv(text)).toEqual({
			rows: [
				{ line: 1, fields: ["x", "one\ntwo\r\nthree", "y"] },
				{ line: 4, fields: ["next", "1"] },
				{ line: 5, fields: ["\n\n", "z"] },
				{ line: 8, fields: ["last"] },
			],
			errors: [],
		});
	});

	it("keeps a lone CR inside quotes without counting it as a line", () => {
		expect(parseCsv('"a\rb"\nc\n').rows).toEqual([
			{ line: 1, fields: ["a\rb"] },
			{ line: 2, fields: ["c"] },
		]);
	});

	it("returns fields raw, without restoring them", () => {
		expect(parseCsv("'=1,''+1,'\n").rows).toEqual([{ line: 1, fields: ["'=1", "''+1", "'"] }]);
	});

	it("refuses a quote inside an unquoted field and reads the next lines", () => {
		expect(parseCsv('good,1\nba"d,2\nal"so"bad\ngood,3\n')).toEqual({
			rows: [
				{ line: 1, fields: ["good", "1"] },
				{ line: 4, fields: ["good", "3"] },
			],
			errors: [
				{ line: 2, message: QUOTE_IN_UNQUOTED },
				{ line: 3, message: QUOTE_IN_UNQUOTED },
			],
		});
	});

	it("ignores the rest of a bad line, even a quote that would open a field", () => {
		expect(parseCsv('a"b,"c\nd,e\n')).toEqual({
			rows: [{ line: 2, fields: ["d", "e"] }],
			errors: [{ line: 1, message: QUOTE_IN_UNQUOTED }],
		});
	});

	it("refuses text after a closing quote and reads the next lines", () => {
		expect(parseCsv('"a"b,c\n"a" ,c\r\n"a""b"x\nok\n')).toEqual({
			rows: [{ line: 4, fields: ["ok"] }],
			errors: [
				{ line: 1, message: AFTER_CLOSING_QUOTE },
				{ line: 2, message: AFTER_CLOSING_QUOTE },
				{ line: 3, message: AFTER_CLOSING_QUOTE },
			],
		});
	});

	it("reports a bad record over several lines at its first line and resumes after the bad one", () => {
		expect(parseCsv('ok\n"multi\nline"x,y\nafter\n')).toEqual({
			rows: [
				{ line: 1, fields: ["ok"] },
				{ line: 4, fields: ["after"] },
			],
			errors: [{ line: 2, message: AFTER_CLOSING_QUOTE }],
		});
	});

	it("refuses a CR that does not end a line, outside quotes", () => {
		expect(parseCsv('a\rb\n"q"\r,x\nc\r\n')).toEqual({
			rows: [{ line: 3, fields: ["c"] }],
			errors: [
				{ line: 1, message: BARE_CR },
				{ line: 2, message: BARE_CR },
			],
		});
		expect(parseCsv("a\r")).toEqual({ rows: [], errors: [{ line: 1, message: BARE_CR }] });
	});

	it("reports an error on a last line without a line end", () => {
		expect(parseCsv('a\nb"c')).toEqual({
			rows: [{ line: 1, fields: ["a"] }],
			errors: [{ line: 2, message: QUOTE_IN_UNQUOTED }],
		});
	});

	it("lets an unterminated quote take the rest of the input", () => {
		expect(parseCsv('ok,1\n"open,a\nb,c\r\nd\n')).toEqual({
			rows: [{ line: 1, fields: ["ok", "1"] }],
			errors: [{ line: 2, message: UNTERMINATED }],
		});
		expect(parseCsv('x,"abc')).toEqual({ rows: [], errors: [{ line: 1, message: UNTERMINATED }] });
		expect(parseCsv('"')).toEqual({ rows: [], errors: [{ line: 1, message: UNTERMINATED }] });
		expect(parseCsv('"a""')).toEqual({ rows: [], errors: [{ line: 1, message: UNTERMINATED }] });
	});

	it("reports every bad record in order among good ones", () => {
		const text = ["h1,h2", 'ba"d', "good,1", '"x"y', "", '"unterminated\nrest'].join("\n");
		expect(parseCsv(text)).toEqual({
			rows: [
				{ line: 1, fields: ["h1", "h2"] },
				{ line: 3, fields: ["good", "1"] },
			],
			errors: [
				{ line: 2, message: QUOTE_IN_UNQUOTED },
				{ line: 4, message: AFTER_CLOSING_QUOTE },
				{ line: 6, message: UNTERMINATED },
			],
		});
	});
});
