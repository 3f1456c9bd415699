import { type EntryJson, renderEntry, type StoredEntry } from "./entry";
import { LISTS, type ListName } from "./policy";

/** KV keys hold at most 512 bytes; an address longer than this in UTF-8 is keyed by its hash. */
const MAX_PLAIN_KEY_BYTES = 500;
/** KV bulk get takes at most 100 keys. */
export const KV_BATCH = 100;
/** A bulk get answers 413 when the values it returns take more than 25 MiB in all. */
const KV_BULK_GET_BYTES = 25 * 1024 * 1024;
/** The most keys one request reads at once: a check's 1,000 addresses, ten bulk gets in parallel. */
const KEYS_READ_AT_ONCE = 1000;
/**
 * The largest value written for an address, in bytes of UTF-8 (25,190): the values of a whole
 * check, read at once, take at most what one bulk get may return, 25 MiB, in a Worker's 128 MB.
 * One hundredth of 25 MiB would let a check of 1,000 such addresses hold 261 MB. One entry
 * fits even with the longest reason (4,096 control characters, written as `\u0001`: about
 * 24.8 KB); an address with more than that, or with about 100 entries of ordinary reasons, is
 * read from D1.
 */
export const MAX_EDGE_VALUE_BYTES = Math.floor(KV_BULK_GET_BYTES / KEYS_READ_AT_ONCE) - 1024;
/**
 * What the key holds instead when the entries are too large for it: a JSON string that tells
 * readers to read the address's entries from D1 (as anything but an array of entries does).
 */
export const IN_D1 = '"d1"';

const encoder = new TextEncoder();

/**
 * The KV key of an address: `s:` and the normalised address, or `h:` and its SHA-256 when the
 * address is too long for a key (the address then travels in the key's metadata).
 *
 * @example
 * await edgeKey("a@example.com") // "s:a@example.com"
 */
export async function edgeKey(email: string): Promise<string> {
	const plain = plainEdgeKey(email);
	if (plain) return plain;
	const bytes = encoder.encode(email);
	if (bytes.length <= MAX_PLAIN_KEY_BYTES) return `s:${email}`;
	const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
	return `h:${Array.from(digest, (byte) => byte.toString(16).padStart(2, "0")).join("")}`;
}

/**
 * The address an `h:` key belongs to, from its metadata, or null unless that address hashes to
 * the key's name. Every address long enough for an `h:` key is non-ASCII (254 characters of ASCII
 * fit a plain key), and KV carries metadata in an HTTP header, so metadata that came back altered
 * names no address this key can be checked against.
 */
export async function hashedKeyOwner(
	name: string,
	metadata: { email?: unknown } | null | undefined,
): Promise<string | null> {
	const email = metadata?.email;
	return typeof email === "string" && (await edgeKey(email)) === name ? email : null;
}

/**
 * The key of an address short enough to need no hashing, or null: 166 UTF-16 units are at most
 * 498 bytes of UTF-8, so such an address is always a plain key. Synchronous, for the bulk check.
 */
export function plainEdgeKey(email: string): string | null {
	return email.length <= 166 ? `s:${email}` : null;
}

/**
 * What an address's KV key holds: its live entries, rendered as the lookup API shows them, or,
 * when they take more than {@link MAX_EDGE_VALUE_BYTES}, a marker that sends readers to D1.
 */
export function renderEdgeValue(entries: readonly StoredEntry[]): string {
	const value = JSON.stringify(entries.map(renderEntry));
	// A UTF-16 unit takes at most 3 bytes of UTF-8: most values need no encoding to be measured.
	if (value.length * 3 <= MAX_EDGE_VALUE_BYTES) return value;
	return encoder.encode(value).byteLength <= MAX_EDGE_VALUE_BYTES ? value : IN_D1;
}

/**
 * Parses a KV value written by {@link renderEdgeValue}: its entries, or null when they must be
 * read from D1. That is the case for the marker of entries too large for KV, and for anything
 * else that is not what the writer puts (not JSON, not an array, an entry without a list, a scope
 * or a readable expiry: a key written by hand or by another version), which must never read as
 * "no entries" and let a suppressed address be mailed.
 */
export function parseEdgeValue(text: string): EntryJson[] | null {
	let value: unknown;
	try {
		value = JSON.parse(text);
	} catch {
		return null;
	}
	return Array.isArray(value) && value.every(isEdgeEntry) ? (value as EntryJson[]) : null;
}

/** Whether a parsed KV entry has what deciding a lookup reads: its list, scope and expiry. */
function isEdgeEntry(entry: unknown): boolean {
	if (typeof entry !== "object" || entry === null) return false;
	const { list, scope, expiresAt } = entry as Record<string, unknown>;
	return (
		LISTS.includes(list as ListName) &&
		typeof scope === "string" &&
		(expiresAt === null ||
			(typeof expiresAt === "string" && Number.isFinite(Date.parse(expiresAt))))
	);
}
