import { domainKey } from "../email";
import { lowerRollupMark, rollUpAddress } from "../events/stats-store";
import type { StoredEntry } from "./entry";
import { ANY_SCOPE, type ListName } from "./policy";
import { ENTRY_COLUMNS } from "./store";

/** Position after the last entry of a page, in primary key order. */
export type EntryCursor = [email: string, list: string, scope: string, origin: string];

/** Live entries, filtered, in address order, one page at a time. */
export async function listEntries(
	db: D1Database,
	filters: { list?: ListName; scope?: string; since?: number },
	limit: number,
	now: number,
	after?: EntryCursor,
): Promise<{ entries: StoredEntry[]; next: EntryCursor | null }> {
	const where = ["(expires_at IS NULL OR expires_at > ?)"];
	const params: unknown[] = [now];
	if (filters.list !== undefined) {
		where.push("list = ?");
		params.push(filters.list);
	}
	if (filters.scope !== undefined) {
		where.push("scope = ?");
		params.push(filters.scope);
	}
	if (filters.since !== undefined) {
		where.push("updated_at >= ?");
		params.push(filters.since);
	}
	if (after) {
		where.push("(email, list, scope, origin) > (?, ?, ?, ?)");
		params.push(...after);
	}
	const { results } = await db
		.prepare(
			`SELECT ${ENTRY_COLUMNS} FROM suppressions WHERE ${where.join(" AND ")}
			ORDER BY email, list, scope, origin LIMIT ?`,
		)
		.bind(...params, limit + 1)
		.all<StoredEntry>();
	const page = results.slice(0, limit);
	const last = page[page.length - 1];
	const next: EntryCursor | null =
		results.length > limit && last ? [last.email, last.list, last.scope, last.origin] : null;
	return { entries: page, next };
}

/** An operator's entry, as `PUT /v1/suppressions/{email}` takes it. */
export interface OperatorEntry {
	list: ListName;
	scope: string;
	reason: string | null;
	expiresAt: number | null;
}

/**
 * Adds or updates an operator's entry. Idempotent: the same entry again changes nothing, not
 * even `updatedAt`, and records no history. Returns whether anything changed.
 */
export async function putEntry(
	db: D1Database,
	email: string,
	entry: OperatorEntry,
	now: number,
): Promise<boolean> {
	const result = await db
		.prepare(
			`INSERT INTO suppressions (email, list, scope, origin, reason, event_count, created_at,
				updated_at, expires_at, change_note)
			VALUES (?1, ?2, ?3, 'api', ?4, 0, ?5, ?5, ?6, ?4)
			ON CONFLICT (email, list, scope, origin) DO UPDATE SET
				reason = excluded.reason, expires_at = excluded.expires_at,
				-- An entry that has expired is gone even before the cron retires it: this is a new one.
				created_at = iif(suppressions.expires_at <= excluded.updated_at, excluded.created_at,
					suppressions.created_at),
				updated_at = excluded.updated_at, change_note = excluded.change_note
			WHERE suppressions.reason IS NOT excluded.reason
				OR suppressions.expires_at IS NOT excluded.expires_at
				OR suppressions.expires_at <= excluded.updated_at
			RETURNING email`,
		)
		.bind(email, entry.list, entry.scope, entry.reason, now, entry.expiresAt)
		.all();
	return result.results.length > 0;
}

/**
 * Removes the address's entries matching the filters (all without one), in one transaction:
 * records each live one as removed by the operator (and one that ran out on its own before the
 * cron retired it as expired, at its expiry, as the cron would have), records the removal so that
 * older events never bring it back, and deletes the rows. Returns how many live entries were
 * removed.
 *
 * The removal is recorded for every list and scope it matched, and, whether an entry existed or
 * not, for each list and scope events could still make that the filters name: a list without a
 * scope means its entry for every sender (`*`, the only scope of bounces and complaints); a domain
 * scope of an unsubscribe that no entry had yet is recorded only when named. A domain scope matches
 * the entries of that domain however their scopes are spelt, as lookups compare them. Each domain
 * scope recorded is also recorded in its {@link domainKey} form, which evidence is held back by
 * besides its own spelling: an older event that spells the domain another way never brings back
 * what was lifted.
 */
export async function removeEntries(
	db: D1Database,
	email: string,
	filter: { list?: ListName; scope?: string },
	now: number,
): Promise<number> {
	const stored = await storedScopes(db, email);
	const scopes = filter.scope === undefined ? null : spellingsOf(stored, filter.scope);
	const named = namedByRemoval(filter);
	const lifted = stored.filter(
		(entry) =>
			(filter.list === undefined || entry.list === filter.list) &&
			(scopes === null || scopes.includes(entry.scope)),
	);
	const keyed = [...named, ...lifted.map((entry): [ListName, string] => [entry.list, entry.scope])]
		.map(([list, scope]): [ListName, string] => [list, domainKey(scope)])
		.filter(([list, key]) => !named.some((pair) => pair[0] === list && pair[1] === key));
	const match = `email = ?1 AND (?2 IS NULL OR list = ?2)
		AND (?3 IS NULL OR scope IN (SELECT value FROM json_each(?3)))`;
	const params = [
		email,
		filter.list ?? null,
		scopes === null ? null : JSON.stringify(scopes),
		now,
	] as const;
	const [, , deleted] = await db.batch([
		db
			.prepare(
				`INSERT INTO suppression_history (email, at, action, list, scope, source, event_id, note)
				SELECT email, ?4, 'removed', list, scope, 'api', NULL, NULL FROM suppressions
				WHERE ${match} AND (expires_at IS NULL OR expires_at > ?4)
				UNION ALL
				SELECT email, expires_at, 'expired', list, scope, 'cron', NULL, NULL FROM suppressions
				WHERE ${match} AND expires_at <= ?4 AND expires_at > updated_at`,
			)
			.bind(...params),
		// Recorded even without an entry: an older event arriving late must not create what the
		// operator just lifted.
		db
			.prepare(
				`INSERT INTO suppression_removals (email, list, scope, removed_at)
				SELECT DISTINCT email, list, scope, ?4 FROM suppressions WHERE ${match}
				UNION SELECT ?1, value ->> 0, value ->> 1, ?4 FROM json_each(?5) WHERE true
				ON CONFLICT (email, list, scope) DO UPDATE SET removed_at = excluded.removed_at`,
			)
			.bind(...params, JSON.stringify([...named, ...keyed])),
		db
			.prepare(`DELETE FROM suppressions WHERE ${match} RETURNING expires_at AS expiresAt`)
			.bind(...params.slice(0, 3)),
	]);
	const rows = (deleted?.results ?? []) as Array<{ expiresAt: number | null }>;
	return rows.filter((row) => row.expiresAt === null || row.expiresAt > now).length;
}

/**
 * The domain scopes stored for the address, with their lists. Read before the removal's batch
 * (SQL cannot map an IDN): a spelling first stored in between is not removed when the removal
 * names a domain, which leaves the address suppressed.
 */
async function storedScopes(
	db: D1Database,
	email: string,
): Promise<Array<{ list: ListName; scope: string }>> {
	const { results } = await db
		.prepare("SELECT DISTINCT list, scope FROM suppressions WHERE email = ?1 AND scope != ?2")
		.bind(email, ANY_SCOPE)
		.all<{ list: ListName; scope: string }>();
	return results;
}

/**
 * The scopes among `stored` that name the same sender as `scope`, and `scope` itself: entries
 * keep the spelling their scope came in (`news.example.com.`, `bücher.de`), and a lookup with
 * `fromDomain=news.example.com` (or `xn--bcher-kva.de`) counts them, so a removal that names the
 * domain in another spelling must find them too, or it would lift nothing while the sender is
 * still told the address is suppressed.
 */
function spellingsOf(stored: ReadonlyArray<{ scope: string }>, scope: string): string[] {
	if (scope === ANY_SCOPE) return [ANY_SCOPE];
	const key = domainKey(scope);
	const found = stored.map((entry) => entry.scope).filter((other) => domainKey(other) === key);
	return [...new Set([scope, ...found])];
}

/** The lists events make entries in, and the list and scope pairs a removal's filters name. */
function namedByRemoval(filter: { list?: ListName; scope?: string }): [ListName, string][] {
	const lists = filter.list ? [filter.list] : (["bounce", "complaint", "unsubscribe"] as const);
	const scope = filter.scope ?? ANY_SCOPE;
	return lists
		.filter((list) => filter.list || list === "unsubscribe" || scope === ANY_SCOPE)
		.map((list) => [list, scope]);
}

/** One change to an address's entries, as the history stores it. */
export interface HistoryRow {
	at: number;
	action: string;
	list: string;
	scope: string;
	source: string;
	eventId: string | null;
	note: string | null;
}

/**
 * Every change to the address's entries, oldest first: by time, then in the order written. An
 * `expired` line is dated at the entry's expiry but written later (when the cron retires the
 * entry, or beside the `removed` lines of an operator's removal), so the order written alone could
 * put it after changes made since.
 */
export async function readHistory(db: D1Database, email: string): Promise<HistoryRow[]> {
	const { results } = await db
		.prepare(
			`SELECT at, action, list, scope, source, event_id AS eventId, note FROM suppression_history
			WHERE email = ? ORDER BY at, seq`,
		)
		.bind(email)
		.all<HistoryRow>();
	return results;
}

/**
 * Erases an address: its events always; with `suppressions`, also its entries, removals and
 * history (so nothing of it is left but aggregate rollups, and the queue entry by which the next
 * reconcile run makes sure its KV key is gone). Returns the events deleted and the entries that
 * still applied at `now` (as a removal counts them: an expired row the cron has not retired yet is
 * deleted too, but no longer was an entry).
 */
export async function eraseAddress(
	db: D1Database,
	email: string,
	suppressions: boolean,
	now: number,
): Promise<{ events: number; entries: number }> {
	const deleteEvents = db.prepare("DELETE FROM events WHERE email = ?").bind(email);
	// Counted by what it returns: meta.changes would count the rows its trigger queues too.
	const deleteEntries = db
		.prepare("DELETE FROM suppressions WHERE email = ? RETURNING expires_at AS expiresAt")
		.bind(email);
	const statements = [
		// The rollups count its events first: they outlive the erasure (they hold no address). Only
		// its own: counting every event the cron has not counted yet took the erasure about 2 µs per
		// such event locally, 8 s with 4 million after the cron had stopped for a while, and held
		// every other statement back meanwhile.
		rollUpAddress(db, email),
		deleteEvents,
		lowerRollupMark(db),
		// Its events are gone, so there is nothing left to decide again.
		db.prepare("DELETE FROM soft_bounce_recheck WHERE email = ?").bind(email),
	];
	if (suppressions) {
		statements.push(
			deleteEntries,
			db.prepare("DELETE FROM suppression_removals WHERE email = ?").bind(email),
			db.prepare("DELETE FROM suppression_history WHERE email = ?").bind(email),
		);
	}
	const results = await db.batch(statements);
	const changes = (statement: D1PreparedStatement) =>
		results[statements.indexOf(statement)]?.meta.changes ?? 0;
	const deleted = (results[statements.indexOf(deleteEntries)]?.results ?? []) as Array<{
		expiresAt: number | null;
	}>;
	const entries = deleted.filter((row) => row.expiresAt === null || row.expiresAt > now).length;
	return { events: changes(deleteEvents), entries };
}
