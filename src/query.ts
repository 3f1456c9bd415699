import * as z from "zod/mini";
import { ApiError, type Issue } from "./errors";
import { MAX_UNIX_SECONDS } from "./tencent/schema";

/** Query values as itty-router gives them: a repeated parameter becomes an array. */
export type RawQuery = Record<string, string | string[] | undefined>;

const ISO_TIME =
	/^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$/i;

/** Date.parse rolls 2024-02-30 over into March; a date that does not exist is refused instead. */
function isCalendarDate(value: string): boolean {
	const [year, month, day] = value.slice(0, 10).split("-").map(Number) as [number, number, number];
	const date = new Date(Date.UTC(year, month - 1, day));
	return (
		date.getUTCFullYear() === year && date.getUTCMonth() === month - 1 && date.getUTCDate() === day
	);
}

/**
 * An ISO 8601 time whose offset's `+` became a space, as a query string reads it
 * (`?since=2024-01-02T03:04:05+08:00` sent unencoded).
 */
const PLUS_AS_SPACE = /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)? \d{2}:?\d{2}$/i;

const TIME_MESSAGE = "must be an ISO 8601 time or Unix seconds, at most the end of year 9999";

/**
 * A time as ISO 8601 or Unix seconds, up to the end of year 9999, parsed into Unix seconds. A
 * fraction of a second rounds up, so that comparing with the whole seconds stored keeps its
 * meaning: an inclusive `since` leaves out the second before it, an exclusive `until` keeps it,
 * and an expiry is not reached early.
 */
export const timeParam = z.pipe(
	z.string(),
	z.transform((raw, ctx) => {
		const value = raw.trim();
		// Date.parse keeps whole milliseconds and drops finer digits (`.0001` would read as `.000`
		// and not round up), so the fraction is read apart from the rest of the time.
		const fraction = /\.(\d+)/.exec(value)?.[1] ?? "";
		const ms = /^\d{1,12}$/.test(value)
			? Number(value) * 1000
			: ISO_TIME.test(value) && isCalendarDate(value)
				? Date.parse(value.replace(/\.\d+/, ""))
				: Number.NaN;
		const seconds = ms / 1000 + (/[1-9]/.test(fraction) ? 1 : 0);
		if (!Number.isFinite(ms) || ms < 0 || seconds > MAX_UNIX_SECONDS) {
			ctx.issues.push({
				code: "custom",
				input: raw,
				message: PLUS_AS_SPACE.test(value)
					? `${TIME_MESSAGE} (a query string reads + as a space: send the + of an offset as %2B)`
					: TIME_MESSAGE,
			});
			return z.NEVER;
		}
		return seconds;
	}),
);

/** A time in a JSON body: ISO 8601 or Unix seconds, as a string or a number. */
export const timeValue = z.union(
	[timeParam, z.pipe(z.pipe(z.int(), z.transform(String)), timeParam)],
	{
		error: "must be an ISO 8601 time or Unix seconds",
	},
);

/**
 * Page size: default 100, at most 1000. The default is a prefault, the parameter as it would be
 * given, so that the OpenAPI document shows it: zod leaves out a default that is the output of a
 * transform from the schema of what a client sends. For the same reason the pattern states the
 * range itself (1 to 1000, leading zeros allowed), which the document's string cannot otherwise.
 */
export const limitParam = z.prefault(
	z.pipe(
		z.string().check(
			z.regex(/^(?:0{0,3}[1-9]|0{0,2}[1-9]\d|0?[1-9]\d{2}|1000)$/, {
				error: "must be an integer from 1 to 1000",
			}),
		),
		z.pipe(
			z.transform(Number),
			z
				.int()
				.check(
					z.gte(1, { error: "must be an integer from 1 to 1000" }),
					z.lte(1000, { error: "must be an integer from 1 to 1000" }),
				),
		),
	),
	"100",
);

/**
 * The query parameters of a URL, a repeated one as the array of its values. itty-router's own
 * reading keeps only the last of a repeat whose earlier values are empty (`?limit=&limit=5` reads
 * as `limit=5`), which would let {@link parseQuery} take a repeated parameter as given once. It
 * also decodes as URLSearchParams does, keeping an invalid escape (`%zz`) as it is and turning
 * bytes that are not UTF-8 into U+FFFD: `?fromDomain=b%FCcher.de` (Latin-1's ü) would look up
 * another domain and answer that the address is not suppressed for it. Such a parameter is
 * refused, as an address in the path is.
 *
 * @throws ApiError 400 `invalid_query` naming each parameter that is not validly URL-encoded
 */
export function readQuery(url: string): RawQuery {
	const query = new Map<string, string | string[]>();
	const issues: Issue[] = [];
	const search = new URL(url).search.slice(1);
	for (const part of search === "" ? [] : search.split("&")) {
		if (part === "") continue;
		const equals = part.indexOf("=");
		const rawName = equals === -1 ? part : part.slice(0, equals);
		const name = decodeQueryPart(rawName);
		const value = decodeQueryPart(equals === -1 ? "" : part.slice(equals + 1));
		if (name === null || value === null) {
			issues.push({ path: name ?? rawName, message: "must be validly URL-encoded (UTF-8)" });
			continue;
		}
		const before = query.get(name);
		query.set(name, before === undefined ? value : [...[before].flat(), value]);
	}
	if (issues.length > 0) {
		throw new ApiError(400, "invalid_query", "The query parameters are not valid", issues);
	}
	// fromEntries makes every name an own property, `__proto__` as well.
	return Object.fromEntries(query);
}

/** A name or value of a query string decoded (`+` is a space), or null when it is not valid. */
function decodeQueryPart(raw: string): string | null {
	try {
		return decodeURIComponent(raw.replaceAll("+", " "));
	} catch {
		return null;
	}
}

/**
 * Parses query parameters with `schema`; unknown or repeated parameters are refused, so a typo
 * never silently widens a query.
 *
 * @throws ApiError 400 `invalid_query` with one issue per bad parameter
 */
export function parseQuery<T extends z.ZodMiniType>(schema: T, query: RawQuery): z.output<T> {
	const issues: Issue[] = [];
	const single = new Map<string, string>();
	for (const [name, value] of Object.entries(query)) {
		if (Array.isArray(value)) issues.push({ path: name, message: "must be given once" });
		else if (value !== undefined) single.set(name, value);
	}
	// Not `single[name] = value` on a plain object: `?__proto__=1` would set its prototype, and so
	// escape the check for unknown parameters.
	const parsed = z.safeParse(schema, Object.fromEntries(single));
	if (!parsed.success) {
		for (const issue of parsed.error.issues) {
			const path = issue.path.length > 0 ? issue.path.map(String).join(".") : "";
			const keys = "keys" in issue && Array.isArray(issue.keys) ? issue.keys : [];
			if (keys.length > 0) {
				for (const key of keys)
					issues.push({ path: String(key), message: "is not a known parameter" });
			} else issues.push({ path, message: issue.message });
		}
	}
	if (issues.length > 0 || !parsed.success) {
		throw new ApiError(400, "invalid_query", "The query parameters are not valid", issues);
	}
	return parsed.data;
}

/** Encodes a page position (which may hold any Unicode, e.g. an address) as base64url of UTF-8. */
export function encodeCursor(parts: readonly (string | number)[]): string {
	const bytes = new TextEncoder().encode(JSON.stringify(parts));
	const binary = Array.from(bytes, (byte) => String.fromCharCode(byte)).join("");
	return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** Decodes {@link encodeCursor}'s output; anything else gives null. */
export function decodeCursor(cursor: string): unknown[] | null {
	try {
		const binary = atob(cursor.replace(/-/g, "+").replace(/_/g, "/"));
		const text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(
			Uint8Array.from(binary, (char) => char.charCodeAt(0)),
		);
		const value: unknown = JSON.parse(text);
		return Array.isArray(value) ? value : null;
	} catch {
		return null;
	}
}

/**
 * How many of a page's rows, sized in order, fit in `maxBytes` (the first always does), at most
 * `limit`: a page of large rows stops early, and its cursor leads on from the last that fit.
 */
export function rowsThatFit(
	sizes: readonly { size: number }[],
	limit: number,
	maxBytes: number,
): number {
	let fit = 0;
	let bytes = 0;
	for (const { size } of sizes.slice(0, limit)) {
		if (fit > 0 && bytes + size > maxBytes) break;
		fit++;
		bytes += size;
	}
	return fit;
}
