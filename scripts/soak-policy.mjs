// The suppression policy written again, plainly, from the README's rules, to check the Worker's
// SQL against: the entries one address's events should give (default settings, no removals).
const DAY = 86_400;
const SOFT_LIMIT = 3;
const SOFT_WINDOW = 14 * DAY;
const SOFT_SUPPRESS = 14 * DAY;

const iso = (seconds) => new Date(seconds * 1000).toISOString().replace(".000", "");

/** Entries as { list, scope, eventCount, lastEventAt, expiresAt }, for the unique events of one address. */
export function expectedEntries(events, now) {
	const entries = [];
	const single = (list, scope, matching) => {
		if (matching.length === 0) return;
		const last = Math.max(...matching.map((event) => event.timestamp));
		entries.push({
			list,
			scope,
			eventCount: matching.length,
			lastEventAt: iso(last),
			expiresAt: null,
		});
	};
	const isSoft = (event) => event.event === "bounce" && event.bounceType !== "hard_bounce";
	single(
		"bounce",
		"*",
		events.filter((event) => event.event === "bounce" && event.bounceType === "hard_bounce"),
	);
	single(
		"complaint",
		"*",
		events.filter((event) => event.event === "spamreport"),
	);
	const unsubscribes = events.filter((event) => event.event === "unsubscribe");
	for (const scope of new Set(unsubscribes.map((event) => event.fromDomain.toLowerCase()))) {
		single(
			"unsubscribe",
			scope,
			unsubscribes.filter((event) => event.fromDomain.toLowerCase() === scope),
		);
	}

	// Soft bounces: the latest bounce that ends a run of SOFT_LIMIT within the window, with no
	// delivery between them (a delivery in the same second counts as after), still in force today.
	const softs = events.filter(isSoft).map((event) => event.timestamp);
	const deliveries = events
		.filter((event) => event.event === "delivered")
		.map((event) => event.timestamp);
	let best = null;
	for (const end of softs) {
		if (end + SOFT_SUPPRESS <= now) continue;
		const lastDelivery = Math.max(-1, ...deliveries.filter((at) => at <= end));
		const start = Math.max(end - SOFT_WINDOW, lastDelivery);
		const run = softs.filter((at) => at <= end && at > start).length;
		if (run >= SOFT_LIMIT && (best === null || end > best.end)) best = { end, run };
	}
	if (best) {
		entries.push({
			list: "bounce",
			scope: "*",
			eventCount: best.run,
			lastEventAt: iso(best.end),
			expiresAt: iso(best.end + SOFT_SUPPRESS),
		});
	}
	return entries;
}
