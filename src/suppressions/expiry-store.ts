/**
 * Retires at most `limit` entries that expired by `now`, in one transaction: each one that ran
 * out on its own is recorded as expired by the cron, at its expiry (one withdrawn by a delivery
 * already has its history), then the rows are deleted. Returns how many entries it retired (the
 * limit counts entries, and an address may have several) and the addresses concerned.
 */
export async function retireExpired(
	db: D1Database,
	now: number,
	limit: number,
): Promise<{ entries: number; emails: string[] }> {
	const due = `(email, list, scope, origin) IN (SELECT email, list, scope, origin FROM suppressions
		WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2)`;
	const [, deleted] = await db.batch([
		db
			.prepare(
				`INSERT INTO suppression_history (email, at, action, list, scope, source, event_id, note)
				SELECT email, expires_at, 'expired', list, scope, 'cron', NULL, NULL FROM suppressions
				WHERE ${due} AND expires_at > updated_at`,
			)
			.bind(now, limit),
		db.prepare(`DELETE FROM suppressions WHERE ${due} RETURNING email`).bind(now, limit),
	]);
	const rows = (deleted?.results ?? []) as Array<{ email: string }>;
	return { entries: rows.length, emails: [...new Set(rows.map((row) => row.email))] };
}

/** Up to `limit` distinct addresses that have entries, in order after `after`. */
export async function listAddresses(
	db: D1Database,
	after: string,
	limit: number,
): Promise<string[]> {
	const { results } = await db
		.prepare("SELECT DISTINCT email FROM suppressions WHERE email > ? ORDER BY email LIMIT ?")
		.bind(after, limit)
		.all<{ email: string }>();
	return results.map((row) => row.email);
}

/** A value the cron keeps between runs, or "" when none is kept. */
export async function readCronState(db: D1Database, name: string): Promise<string> {
	const row = await db
		.prepare("SELECT value FROM cron_state WHERE name = ?")
		.bind(name)
		.first<{ value: string }>();
	return row?.value ?? "";
}

export function writeCronState(db: D1Database, name: string, value: string): D1PreparedStatement {
	return db
		.prepare(
			"INSERT INTO cron_state (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
		)
		.bind(name, value);
}
