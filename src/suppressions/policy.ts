import type { PolicySettings } from "../config";
import { isSenderDomain, senderDomain } from "../email";
import type { StoredEvent } from "../events/event";
import { MAX_UNIX_SECONDS } from "../tencent/schema";

/** The suppression lists of the contract. */
export const LISTS = ["bounce", "complaint", "unsubscribe", "manual"] as const;
export type ListName = (typeof LISTS)[number];

/** Every sender. */
export const ANY_SCOPE = "*";

/**
 * What one event says about an address's entries. Evidence merges into the entry of its address,
 * list and scope in any order with the same result: counts add up, and the evidence that occurred
 * last (ties broken by event id) gives the reason, the bulk id and the expiry.
 */
export interface Evidence {
	email: string;
	list: ListName;
	scope: string;
	/** Unix seconds the event occurred. */
	at: number;
	eventId: string;
	reason: string | null;
	bulkId: string | null;
	/** Unix seconds, or null for never. */
	expiresAt: number | null;
	/** Sorts evidence by time, then event id: the greatest one wins. */
	rank: string;
}

/**
 * The scope an unsubscribe applies to: Tencent itself blocks only the sender domain, so by
 * default the entry is scoped to it (the event's fromDomain, which the normaliser already derives
 * from `from`); `UNSUBSCRIBE_SCOPE=global` makes every unsubscribe apply to every sender. A
 * fromDomain that is no domain name (an address, a list, a URL: the callback stores any string)
 * gives way to the domain of a plausible address in `from`, else to every sender, since a lookup
 * could never name it and an import would refuse its export; so does one with a character no
 * address's domain holds (`example.com>`, `news.example.com;`), which no lookup for the sender's
 * domain would match.
 */
function unsubscribeScope(event: StoredEvent, policy: PolicySettings): string {
	if (policy.unsubscribeScope === "global") return ANY_SCOPE;
	if (event.fromDomain !== null && isSenderDomain(event.fromDomain)) return event.fromDomain;
	const derived = event.from === null ? null : senderDomain(event.from);
	return derived !== null && isSenderDomain(derived) ? derived : ANY_SCOPE;
}

/** Orders evidence by the time it occurred, then by event id, as one comparable string. */
function evidenceRank(at: number, eventId: string): string {
	return `${String(at).padStart(12, "0")}:${eventId}`;
}

/**
 * The evidence that single events give: a hard bounce makes a `bounce` entry for every sender
 * (expiring `HARD_BOUNCE_SUPPRESS_DAYS` after it, or never), a spam report a `complaint` entry
 * that never expires, an unsubscribe an `unsubscribe` entry for its scope. Soft bounces need the
 * address's history and are decided by {@link softBounceAddresses}'s recompute; every other event
 * type gives nothing. A repeated event (same id) gives its evidence once.
 *
 * @example
 * evidenceFrom([hardBounce], policy) // [{ list: "bounce", scope: "*", ... }]
 */
export function evidenceFrom(events: readonly StoredEvent[], policy: PolicySettings): Evidence[] {
	const byId = new Map<string, Evidence>();
	for (const event of events) {
		const target = targetOf(event, policy);
		if (!target || byId.has(event.id)) continue;
		byId.set(event.id, {
			email: event.email,
			...target,
			at: event.occurredAt,
			eventId: event.id,
			reason: event.reason,
			bulkId: event.bulkId,
			rank: evidenceRank(event.occurredAt, event.id),
		});
	}
	return [...byId.values()];
}

function targetOf(
	event: StoredEvent,
	policy: PolicySettings,
): { list: ListName; scope: string; expiresAt: number | null } | null {
	switch (event.event) {
		case "bounce":
			if (event.bounceType !== "hard") return null;
			return {
				list: "bounce",
				scope: ANY_SCOPE,
				expiresAt:
					policy.hardBounceSuppressSeconds > 0
						? Math.min(event.occurredAt + policy.hardBounceSuppressSeconds, MAX_UNIX_SECONDS)
						: null,
			};
		case "spamreport":
			return { list: "complaint", scope: ANY_SCOPE, expiresAt: null };
		case "unsubscribe":
			return { list: "unsubscribe", scope: unsubscribeScope(event, policy), expiresAt: null };
		default:
			return null;
	}
}

/**
 * Addresses with a soft bounce (a bounce without a type counts as soft, the cautious reading),
 * whose soft-bounce entry must be decided again: it may start or extend a run. The rule itself
 * runs in SQL over the address's stored events, inside the callback's transaction (see
 * `recomputeSoftBounces`). A delivery can only break a run, so it matters only to an address with
 * a live soft entry, which the insert itself reports (see `insertEvents`).
 */
export function softBounceAddresses(events: readonly StoredEvent[]): string[] {
	const emails = new Set<string>();
	for (const event of events) {
		if (event.event === "bounce" && event.bounceType !== "hard") emails.add(event.email);
	}
	return [...emails];
}
