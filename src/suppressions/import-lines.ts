import * as z from "zod/mini";
import { ApiError } from "../errors";
import { quotedName, repeatedMemberName } from "../json";
import { timeValue } from "../query";
import { mailboxField, reasonField, wellFormed } from "../validate";
import { CSV_HEADER, parseCsv, restoreCsvField } from "./csv";
import { listField, scopeField } from "./fields";
import { ANY_SCOPE } from "./policy";
import type { ImportedEntry } from "./transfer-store";

const MAX_IMPORT_LINES = 10_000;
/** The most fields of a CSV line read: a line with more fails as one with 9 does, only sooner. */
const MAX_CSV_FIELDS = 100;

/**
 * One imported entry, in the export's vocabulary (NDJSON may carry every field of an entry, and
 * nothing else: a misspelt field such as `expires_at` fails the line, never an entry that does
 * not expire).
 */
const lineSchema = z.strictObject({
	email: mailboxField,
	list: listField,
	scope: scopeField,
	reason: z._default(reasonField, null),
	source: z._default(z.enum(["event", "api"], { error: "must be event or api" }), "api"),
	// Absent (as in every CSV line, which has no such columns): an existing entry keeps its own.
	eventCount: z.optional(
		z.int({ error: "must be a whole number" }).check(z.gte(0, { error: "must be 0 or more" })),
	),
	lastEventAt: z.optional(z.nullable(timeValue)),
	// Well-formed, as a reason must be: D1 would store a lone surrogate as other characters. Blank
	// is none, as for a reason and in a callback, which never stores a blank bulkId.
	bulkId: z.optional(
		z.nullable(
			z.pipe(
				z
					.string({ error: "must be a string or null" })
					.check(z.maxLength(512, { error: "must be at most 512 characters" }), wellFormed),
				z.transform((value) => (value.trim() === "" ? null : value)),
			),
		),
	),
	createdAt: z.optional(timeValue),
	updatedAt: z.optional(timeValue),
	expiresAt: z._default(z.nullable(timeValue), null),
});

/** The CSV columns whose names differ from the fields of an NDJSON line. */
const CSV_COLUMNS: Record<string, string> = {
	createdAt: "created_at",
	updatedAt: "updated_at",
	expiresAt: "expires_at",
};

/** CSV fields as named values; an empty optional field is absent (or null where it may be). */
function csvRecord(fields: string[]): Record<string, string | null> {
	const [mail, list, scope, reason, source, createdAt, updatedAt, expiresAt] =
		fields.map(restoreCsvField);
	const optional = (value: string | undefined) => (value ? value : undefined);
	return Object.fromEntries(
		Object.entries({
			email: mail,
			list,
			scope,
			reason: reason || null,
			source: optional(source),
			createdAt: optional(createdAt),
			updatedAt: optional(updatedAt),
			expiresAt: expiresAt || null,
		}).filter(([, value]) => value !== undefined),
	) as Record<string, string | null>;
}

/** Records of the body with their line numbers, or an error for the whole request. */
function records(bytes: Uint8Array, format: "csv" | "ndjson") {
	let text: string;
	try {
		text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(bytes);
	} catch {
		throw new ApiError(400, "invalid_request", "The body is not valid UTF-8");
	}
	const failed: Array<{ line: number; message: string }> = [];
	const found: Array<{ line: number; value: unknown }> = [];
	// Reading stops at the first line past the limit: an 8 MiB body of short lines holds four
	// million of them, which would cost seconds of CPU and more than a Worker's 128 MB to read.
	if (format === "csv") {
		// The header, then one line more than an import holds; a line of far more fields than the
		// header's fails without them all being kept.
		const parsed = parseCsv(text, MAX_IMPORT_LINES + 2, MAX_CSV_FIELDS);
		failed.push(...parsed.errors);
		const [header, ...rows] = parsed.rows;
		// The header must be the first record: a line before it that CSV cannot read is not one.
		if (
			header?.fields.join(",") !== CSV_HEADER.join(",") ||
			parsed.errors.some((error) => error.line < header.line)
		) {
			throw new ApiError(
				400,
				"invalid_request",
				`The first line must be the header ${CSV_HEADER.join(",")}`,
			);
		}
		for (const row of rows) {
			if (row.fields.length !== CSV_HEADER.length) {
				failed.push({
					line: row.line,
					message: `has ${row.fields.length} fields, expected ${CSV_HEADER.length}`,
				});
			} else found.push({ line: row.line, value: csvRecord(row.fields) });
		}
	} else {
		let start = 0;
		for (let line = 1; start <= text.length; line++) {
			if (found.length + failed.length > MAX_IMPORT_LINES) break;
			const end = text.indexOf("\n", start);
			const raw = text.slice(start, end === -1 ? text.length : end);
			start = end === -1 ? text.length + 1 : end + 1;
			if (raw.trim() === "") continue;
			let value: unknown;
			try {
				value = JSON.parse(raw);
			} catch {
				failed.push({ line, message: "is not valid JSON" });
				continue;
			}
			// Said here: the schema would only say "Invalid input" of the line as a whole.
			if (value === null || typeof value !== "object" || Array.isArray(value)) {
				failed.push({ line, message: "is not a JSON object" });
				continue;
			}
			// JSON.parse keeps a repeated name's last value: the line would import one of two
			// addresses, or an entry without the expiry it also names.
			const repeated = repeatedMemberName(raw);
			if (repeated === null) found.push({ line, value });
			else failed.push({ line, message: `names the field ${quotedName(repeated)} more than once` });
		}
	}
	if (found.length + failed.length > MAX_IMPORT_LINES) {
		throw new ApiError(400, "invalid_request", `An import holds at most ${MAX_IMPORT_LINES} lines`);
	}
	return { found, failed };
}

/**
 * Reads an import body into entries to write and per-line failures. A line fails alone: bad
 * fields, an entry already expired, an `updatedAt` or `createdAt` in the future, a `createdAt`
 * after the `updatedAt`, or the same address, list, scope and source as an earlier line (except a
 * second `event` line for `bounce` and `*`: the export writes an address's single-event and
 * soft-bounce entries for every sender as two such lines, in that order; of two such lines, one
 * that never expires is the single-event entry, whichever comes first).
 *
 * @throws ApiError 400 when the body as a whole cannot be read
 */
export function readImport(bytes: Uint8Array, format: "csv" | "ndjson", now: number) {
	// A message names a field as the file does: a CSV line by its column.
	const field = (name: string) => (format === "csv" ? (CSV_COLUMNS[name] ?? name) : name);
	const { found, failed } = records(bytes, format);
	const entries: ImportedEntry[] = [];
	const seen = new Map<string, { line: number; entry: ImportedEntry; paired: boolean }>();
	for (const { line, value } of found) {
		const parsed = z.safeParse(lineSchema, value);
		if (!parsed.success) {
			const [issue] = parsed.error.issues;
			const unknown = issue?.code === "unrecognized_keys" ? issue.keys : [];
			failed.push({
				line,
				message:
					unknown.length > 0
						? `${unknown.join(", ")} ${unknown.length > 1 ? "are not fields" : "is not a field"} of an entry`
						: `${issue?.path.map(String).map(field).join(".") || "line"} ${issue?.message ?? "is invalid"}`,
			});
			continue;
		}
		const entry = parsed.data;
		const key = JSON.stringify([entry.email, entry.list, entry.scope, entry.source]);
		const earlier = seen.get(key);
		const pairs =
			earlier !== undefined &&
			!earlier.paired &&
			entry.source === "event" &&
			entry.list === "bounce" &&
			entry.scope === ANY_SCOPE;
		if (earlier !== undefined && !pairs) {
			failed.push({ line, message: `repeats the entry of line ${earlier.line}` });
		} else if (entry.expiresAt !== null && entry.expiresAt <= now) {
			failed.push({ line, message: "has already expired" });
		} else if (entry.updatedAt !== undefined && entry.updatedAt > now) {
			// An export's times are never ahead of the import: the history dates changes by them.
			failed.push({ line, message: `${field("updatedAt")} is in the future` });
		} else if (entry.createdAt !== undefined && entry.createdAt > now) {
			failed.push({ line, message: `${field("createdAt")} is in the future` });
		} else if (
			entry.createdAt !== undefined &&
			entry.updatedAt !== undefined &&
			entry.createdAt > entry.updatedAt
		) {
			// No export writes it, and the history would date the entry's change before its birth.
			failed.push({
				line,
				message: `${field("createdAt")} is after ${field("updatedAt")}`,
			});
		} else {
			const imported: ImportedEntry = {
				email: entry.email,
				list: entry.list,
				scope: entry.scope,
				origin: entry.source,
				reason: entry.reason,
				eventCount: entry.eventCount,
				lastEventAt: entry.lastEventAt,
				bulkId: entry.bulkId,
				createdAt: entry.createdAt,
				updatedAt: entry.updatedAt,
				expiresAt: entry.expiresAt,
			};
			if (earlier !== undefined) {
				earlier.entry.exact = true;
				earlier.paired = true;
				imported.exact = true;
				// The export writes the single-event entry first, but a soft-bounce entry always
				// expires: a pair whose first line expires and whose second never does (a file
				// sorted by hand) goes back the other way round, never a hard bounce into the soft
				// entry, whose next run would give it an expiry.
				const reversed = earlier.entry.expiresAt !== null && imported.expiresAt === null;
				(reversed ? earlier.entry : imported).origin = "soft";
			} else {
				seen.set(key, { line, entry: imported, paired: false });
			}
			entries.push(imported);
		}
	}
	failed.sort((a, b) => a.line - b.line);
	return { entries, failed };
}
