import { domainKey } from "../email";
import { isoTime } from "../events/event";
import { ANY_SCOPE, type ListName } from "./policy";

/** A suppression entry as stored in D1 (times in Unix seconds). */
export interface StoredEntry {
	email: string;
	list: ListName;
	scope: string;
	origin: "event" | "soft" | "api";
	reason: string | null;
	eventCount: number;
	lastEventAt: number | null;
	bulkId: string | null;
	createdAt: number;
	updatedAt: number;
	expiresAt: number | null;
}

/** A suppression entry as the contract shows it. */
export interface EntryJson {
	list: ListName;
	scope: string;
	reason: string | null;
	source: "event" | "api";
	eventCount: number;
	lastEventAt: string | null;
	bulkId: string | null;
	createdAt: string;
	updatedAt: string;
	expiresAt: string | null;
}

/** The contract's JSON form of a stored entry. */
export function renderEntry(entry: StoredEntry): EntryJson {
	return {
		list: entry.list,
		scope: entry.scope,
		reason: entry.reason,
		source: entry.origin === "api" ? "api" : "event",
		eventCount: entry.eventCount,
		lastEventAt: entry.lastEventAt === null ? null : isoTime(entry.lastEventAt),
		bulkId: entry.bulkId,
		createdAt: isoTime(entry.createdAt),
		updatedAt: isoTime(entry.updatedAt),
		expiresAt: entry.expiresAt === null ? null : isoTime(entry.expiresAt),
	};
}

/** Whether an entry still applies at `now` (Unix seconds). */
function isLive(entry: Pick<EntryJson, "expiresAt">, now: number): boolean {
	return entry.expiresAt === null || Date.parse(entry.expiresAt) > now * 1000;
}

/**
 * The contract's lookup answer for an address. With `fromDomain`, only entries for every sender
 * or for that domain count, the domain compared by {@link domainKey} (so `example.com.`, an IDN in
 * Unicode and in punycode match their other spellings); without it, any entry suppresses (the
 * conservative answer).
 *
 * @example
 * lookupResult("a@example.com", entries, now, "news.example.com")
 */
export function lookupResult<T extends Pick<EntryJson, "list" | "scope" | "expiresAt">>(
	email: string,
	entries: readonly T[],
	now: number,
	fromDomain?: string,
): { email: string; suppressed: boolean; entries: T[] } {
	const sender = fromDomain === undefined ? undefined : domainKey(fromDomain);
	const applying = entries.filter(
		(entry) =>
			isLive(entry, now) &&
			(sender === undefined ||
				entry.scope === ANY_SCOPE ||
				entry.scope === fromDomain ||
				domainKey(entry.scope) === sender),
	);
	return { email, suppressed: applying.length > 0, entries: applying };
}
