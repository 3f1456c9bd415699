import type { ApiError } from "../errors";
import { rowsThatFit } from "../query";

/** The most of a rejected body that is kept: enough to inspect and replay any real callback. */
const MAX_REJECTED_BODY_BYTES = 64 * 1024;
/** The most of a refused request's Content-Type that is kept (real ones are far shorter). */
const MAX_REJECTED_CONTENT_TYPE = 256;

/** A callback request that was refused, as kept for an operator. */
export interface RejectedCallback {
	receivedAt: number;
	error: ApiError;
	contentType: string | null;
	body: Uint8Array;
	/** Size of the whole body as received, which may exceed what is kept. */
	bodyBytes: number;
}

/**
 * Records a refused callback with its error, the first 64 KiB of its raw bytes and the first 256
 * characters of its Content-Type, unless refused callbacks already take `maxBytes` (migration 0011
 * keeps the total). Returns the record's id, or null when it was not recorded because the table is
 * full.
 */
export async function recordRejected(
	db: D1Database,
	rejected: RejectedCallback,
	maxBytes: number,
): Promise<string | null> {
	const id = crypto.randomUUID();
	const { results } = await db
		.prepare(
			`INSERT INTO rejected_callbacks
			(id, received_at, status, code, message, issues, content_type, body, body_bytes)
			SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9
			WHERE coalesce((SELECT bytes FROM rejected_storage WHERE id = 1), 0) < ?10
			RETURNING id`,
		)
		.bind(
			id,
			rejected.receivedAt,
			rejected.error.status,
			rejected.error.code,
			rejected.error.message,
			rejected.error.issues ? JSON.stringify(rejected.error.issues) : null,
			// A header value is Latin-1, so cutting it never splits a character.
			rejected.contentType?.slice(0, MAX_REJECTED_CONTENT_TYPE) ?? null,
			rejected.body.slice(0, MAX_REJECTED_BODY_BYTES),
			rejected.bodyBytes,
			maxBytes,
		)
		.run();
	return results.length > 0 ? id : null;
}

/** A rejected callback as stored. */
export interface RejectedRow {
	id: string;
	receivedAt: number;
	status: number;
	code: string;
	message: string;
	issues: string | null;
	contentType: string | null;
	/** D1 returns a BLOB as an array of bytes. */
	body: number[];
	bodyBytes: number;
	replayedAt: number | null;
	replayStored: number | null;
}

const REJECTED_COLUMNS = `id, received_at AS receivedAt, status, code, message, issues,
	content_type AS contentType, body, body_bytes AS bodyBytes, replayed_at AS replayedAt,
	replay_stored AS replayStored`;

/**
 * The most body bytes one page of rejected callbacks carries. D1 returns a BLOB as a JSON array of
 * numbers, several bytes of memory for each byte of body, so a page of 1000 bodies of 64 KiB would
 * not fit a Worker's 128 MB: a page stops before the body that would pass this (its first body
 * always fits, as at most 64 KiB), and its cursor leads on from there.
 */
const MAX_REJECTED_PAGE_BYTES = 2 * 1024 * 1024;

/**
 * One page of rejected callbacks, newest first, at most `limit` of them and
 * {@link MAX_REJECTED_PAGE_BYTES} of bodies, and the position after it (null on the last).
 */
export async function listRejected(
	db: D1Database,
	limit: number,
	after?: { receivedAt: number; id: string },
): Promise<{ rows: RejectedRow[]; next: { receivedAt: number; id: string } | null }> {
	// First the page's keys and body sizes (one row more than the page, to tell whether another
	// follows), then the rows from the first to the last that fit, bodies and all. With a cursor,
	// a row value that SQLite turns into a range of the index: the page starts where the last
	// ended instead of reading every page before it. A row deleted between the two reads is
	// missing from the page, and one stored between them inside its range (same second) takes its
	// place in it: the page still ends after `fit` rows, its cursor the last of them, so it never
	// holds more than `limit` and nothing is skipped.
	const { results: sizes } = await db
		.prepare(
			`SELECT received_at AS receivedAt, id, length(body) AS size FROM rejected_callbacks
			${after ? "WHERE (received_at, id) < (?1, ?2)" : ""}
			ORDER BY received_at DESC, id DESC LIMIT ?3`,
		)
		.bind(after?.receivedAt ?? null, after?.id ?? null, limit + 1)
		.all<{ receivedAt: number; id: string; size: number }>();
	const fit = rowsThatFit(sizes, limit, MAX_REJECTED_PAGE_BYTES);
	const first = sizes[0];
	const last = sizes[fit - 1];
	if (!first || !last) return { rows: [], next: null };
	const { results: rows } = await db
		.prepare(
			`SELECT ${REJECTED_COLUMNS} FROM rejected_callbacks
			WHERE (received_at, id) <= (?1, ?2) AND (received_at, id) >= (?3, ?4)
			ORDER BY received_at DESC, id DESC LIMIT ?5`,
		)
		.bind(first.receivedAt, first.id, last.receivedAt, last.id, fit + 1)
		.all<RejectedRow>();
	const page = rows.slice(0, fit);
	// More rows than sized: records of the same second joined the range, and the page ends at its
	// `fit`th row.
	const end = rows.length > fit ? page[fit - 1] : sizes.length > fit ? last : undefined;
	return { rows: page, next: end ? { receivedAt: end.receivedAt, id: end.id } : null };
}

export async function readRejected(db: D1Database, id: string): Promise<RejectedRow | null> {
	return db
		.prepare(`SELECT ${REJECTED_COLUMNS} FROM rejected_callbacks WHERE id = ?`)
		.bind(id)
		.first<RejectedRow>();
}

/**
 * The statement that records a replay of `id` at `at`, to run first in the replay's own batch:
 * it adds to `replay_stored` the events of `eventIds` not yet stored (the replay's new events),
 * so a second replay, or two at once, never overwrite what an earlier one stored.
 */
export function markReplayed(
	db: D1Database,
	id: string,
	at: number,
	eventIds: readonly string[],
): D1PreparedStatement {
	return db
		.prepare(
			`UPDATE rejected_callbacks SET replayed_at = ?2,
				replay_stored = coalesce(replay_stored, 0) + (SELECT count(*) FROM
					(SELECT DISTINCT value FROM json_each(?3)) WHERE value NOT IN (SELECT id FROM events))
			WHERE id = ?1`,
		)
		.bind(id, at, JSON.stringify(eventIds));
}
