import { isoTime } from "../events/event";
import type { StoredEntry } from "./entry";
import type { ListName } from "./policy";

/** The columns of a suppression entry, named as {@link StoredEntry} names them. */
export const ENTRY_COLUMNS = `email, list, scope, origin, reason, event_count AS eventCount,
	last_event_at AS lastEventAt, bulk_id AS bulkId, created_at AS createdAt,
	updated_at AS updatedAt, expires_at AS expiresAt`;

/** The columns an insert of suppression entries writes, in the order it gives their values. */
export const INSERT_COLUMNS = `(email, list, scope, origin, reason, event_count, last_event_at, bulk_id,
	event_id, created_at, updated_at, expires_at, change_event_id, change_note)`;

/**
 * Bytes a rendered entry takes at least besides its scope, reason and bulk id (188 with all
 * three empty, the shortest list and source, and no event time): a lower bound, so that reading
 * entries up to `upTo` bytes of them never stops short of what a KV value can hold.
 */
const MIN_RENDERED_ENTRY_BYTES = 150;

/**
 * The statement that reads the entries of `emails` that apply at `now`, ordered by address; a
 * callback puts it at the end of its own batch to read what that batch wrote. With `upTo`, an
 * address's entries are read only until they take more than `upTo` bytes as the API renders them
 * (its first entries, and the one that passes it): enough to write its KV value, which is the
 * marker beyond that size, however many more entries it has.
 */
export function selectEntries(
	db: D1Database,
	emails: readonly string[],
	now: number,
	upTo?: number,
): D1PreparedStatement {
	const live = `FROM suppressions
		WHERE email IN (SELECT value FROM json_each(?1)) AND (expires_at IS NULL OR expires_at > ?2)`;
	if (upTo === undefined) {
		return db
			.prepare(`SELECT ${ENTRY_COLUMNS} ${live} ORDER BY email, list, scope, origin`)
			.bind(JSON.stringify(emails), now);
	}
	const size = `${MIN_RENDERED_ENTRY_BYTES} + length(CAST(scope AS BLOB))
		+ coalesce(length(CAST(reason AS BLOB)), 0) + coalesce(length(CAST(bulk_id AS BLOB)), 0)`;
	return db
		.prepare(
			`SELECT ${ENTRY_COLUMNS} FROM (
				SELECT *, coalesce(sum(${size}) OVER (PARTITION BY email ORDER BY list, scope, origin
					ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before ${live})
			WHERE before <= ?3 ORDER BY email, list, scope, origin`,
		)
		.bind(JSON.stringify(emails), now, upTo);
}

/** Rows of {@link selectEntries}, grouped by address. */
export function groupEntries(rows: readonly StoredEntry[]): Map<string, StoredEntry[]> {
	const byEmail = new Map<string, StoredEntry[]>();
	for (const entry of rows) {
		const entries = byEmail.get(entry.email) ?? [];
		entries.push(entry);
		byEmail.set(entry.email, entries);
	}
	return byEmail;
}

/**
 * The entries of `emails` that apply at `now`, grouped by address; with `upTo`, only as many of
 * an address's entries as {@link selectEntries} reads.
 */
export async function readEntries(
	db: D1Database,
	emails: readonly string[],
	now: number,
	upTo?: number,
): Promise<Map<string, StoredEntry[]>> {
	const { results } = await selectEntries(db, emails, now, upTo).all<StoredEntry>();
	return groupEntries(results);
}

/** What deciding a lookup reads of an entry (its list, scope and expiry), as the API writes it. */
export interface EntryScope {
	list: ListName;
	scope: string;
	expiresAt: string | null;
}

/**
 * The list, scope and expiry of each entry of `emails` that applies at `now`, grouped by address:
 * all a check needs. A reason (up to 4,096 characters, which D1's answer may write as `\u0001`,
 * six bytes each) and the other details are left in D1.
 */
export async function readEntryScopes(
	db: D1Database,
	emails: readonly string[],
	now: number,
): Promise<Map<string, EntryScope[]>> {
	const { results } = await db
		.prepare(
			`SELECT email, list, scope, expires_at AS expiresAt FROM suppressions
			WHERE email IN (SELECT value FROM json_each(?1)) AND (expires_at IS NULL OR expires_at > ?2)`,
		)
		.bind(JSON.stringify(emails), now)
		.all<{ email: string; list: ListName; scope: string; expiresAt: number | null }>();
	const byEmail = new Map<string, EntryScope[]>();
	for (const row of results) {
		const entries = byEmail.get(row.email) ?? [];
		entries.push({
			list: row.list,
			scope: row.scope,
			expiresAt: row.expiresAt === null ? null : isoTime(row.expiresAt),
		});
		byEmail.set(row.email, entries);
	}
	return byEmail;
}
