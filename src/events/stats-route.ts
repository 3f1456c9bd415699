import * as z from "zod/mini";
import { ApiError, json } from "../errors";
import { parseQuery, type RawQuery, timeParam } from "../query";
import { EVENT_TYPES, MAX_UNIX_SECONDS } from "../tencent/schema";
import { domainParam } from "../validate";
import { isoTime } from "./event";
import { type RollupRow, readRollups } from "./stats-store";

const DAY = 86_400;
const DEFAULT_DAYS = 30;
const MAX_DAYS = 3660;

/** Query of `GET /v1/stats`. */
export const statsQuery = z.strictObject({
	since: z.optional(timeParam),
	until: z.optional(timeParam),
	fromDomain: z.optional(domainParam),
});

type Counts = Record<(typeof EVENT_TYPES)[number] | "hardBounce" | "softBounce", number>;

function emptyCounts(): Counts {
	const counts = Object.fromEntries(EVENT_TYPES.map((type) => [type, 0]));
	return { ...counts, hardBounce: 0, softBounce: 0 } as Counts;
}

function add(counts: Counts, row: RollupRow): void {
	const type = row.event as (typeof EVENT_TYPES)[number];
	if (!(type in counts)) return;
	counts[type] += row.count;
	if (type === "bounce" && row.bounceType === "hard") counts.hardBounce += row.count;
	// A bounce without a type counts as soft, as the suppression policy reads it.
	if (type === "bounce" && row.bounceType !== "hard") counts.softBounce += row.count;
}

/** A rate, or null when it has no denominator yet. */
function rate(numerator: number, denominator: number): number | null {
	return denominator === 0 ? null : Math.round((numerator / denominator) * 1e6) / 1e6;
}

/**
 * `GET /v1/stats`: per-day counts of every event type over every UTC day that overlaps
 * [since, until) (default: the last 30 days), hard and soft bounces apart, totals and the two
 * rates Tencent watches: bounceRate = bounces / (delivered + bounces), complaintRate =
 * spamreports / delivered.
 */
export async function statsRoute(request: { query: RawQuery }, env: Env): Promise<Response> {
	const query = parseQuery(statsQuery, request.query);
	const until = query.until ?? Math.floor(Date.now() / 1000);
	// No time before 1970 is a valid parameter, so the range an answer names never starts earlier.
	const since = query.since ?? Math.max(0, until - DEFAULT_DAYS * DAY);
	const fromDay = Math.floor(since / DAY);
	const toDay = Math.ceil(until / DAY);
	if (until <= since || toDay - fromDay > MAX_DAYS) {
		// Without until the range ends now, so the parameter to change is since, the one sent.
		throw new ApiError(400, "invalid_query", "The query parameters are not valid", [
			query.until === undefined
				? {
						path: "since",
						message: `must be before now (until defaults to now), at most ${MAX_DAYS} days before it`,
					}
				: { path: "until", message: `must be after since, at most ${MAX_DAYS} days later` },
		]);
	}
	// Whole days end at midnight, and the midnight after 9999-12-31 has no four-digit year.
	if (toDay * DAY > MAX_UNIX_SECONDS) {
		throw new ApiError(400, "invalid_query", "The query parameters are not valid", [
			{
				path: "until",
				message: "must be at most 9999-12-31T00:00:00Z, the last midnight of year 9999",
			},
		]);
	}
	const rows = await readRollups(env.DB, fromDay, toDay, query.fromDomain);
	const byDay = new Map<number, Counts>();
	const totals = emptyCounts();
	for (const row of rows) {
		const counts = byDay.get(row.day) ?? emptyCounts();
		add(counts, row);
		add(totals, row);
		byDay.set(row.day, counts);
	}
	return json({
		since: isoTime(fromDay * DAY),
		until: isoTime(toDay * DAY),
		fromDomain: query.fromDomain ?? null,
		days: [...byDay].map(([day, counts]) => ({ day: isoTime(day * DAY).slice(0, 10), counts })),
		totals,
		bounceRate: rate(totals.bounce, totals.delivered + totals.bounce),
		complaintRate: rate(totals.spamreport, totals.delivered),
	});
}
