import type { EventType } from "../tencent/schema";

/** One stored event: Tencent's callback normalised into our own names and types. */
export interface StoredEvent {
	/** Idempotency key: a hash of the event object exactly as received. */
	id: string;
	event: EventType;
	email: string;
	bulkId: string | null;
	messageId: string | null;
	taskId: number | null;
	templateId: number | null;
	appId: string | null;
	from: string | null;
	fromDomain: string | null;
	bounceType: "hard" | "soft" | null;
	reason: string | null;
	link: string | null;
	userAgent: string | null;
	subject: string | null;
	/** Unix seconds. */
	occurredAt: number;
	/** Unix seconds. */
	sentAt: number | null;
	/** Unix seconds. */
	receivedAt: number;
	/** `X-Tencentcloudses-Cb-*` fields, names as received. */
	custom: Record<string, string>;
	/** Every other field the schema does not model, unchanged. */
	extra: Record<string, unknown>;
}

/**
 * ISO 8601 UTC without fractional seconds, as the contract shows times.
 *
 * @example
 * isoTime(1654064683) // "2022-06-01T06:24:43Z"
 */
export function isoTime(unixSeconds: number): string {
	return new Date(unixSeconds * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
}

/** The contract's JSON form of an event. */
export function renderEvent(event: StoredEvent): Record<string, unknown> {
	return {
		...event,
		occurredAt: isoTime(event.occurredAt),
		sentAt: event.sentAt === null ? null : isoTime(event.sentAt),
		receivedAt: isoTime(event.receivedAt),
	};
}
