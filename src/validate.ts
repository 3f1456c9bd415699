import * as z from "zod/mini";
import {
	DOMAIN_NAME,
	emailProblem,
	MAX_DOMAIN_LENGTH,
	mailboxProblem,
	normalizeEmail,
} from "./email";
import { ApiError, type Issue, MAX_ISSUES } from "./errors";

/**
 * zod issues in the contract's `issues` shape, the first {@link MAX_ISSUES} of them; an unknown
 * field is an issue at its own path.
 */
function toIssues(error: z.core.$ZodError): Issue[] {
	const issues: Issue[] = [];
	for (const issue of error.issues) {
		const path = issue.path.map(String);
		const keys = issue.code === "unrecognized_keys" ? issue.keys : [];
		if (keys.length === 0) issues.push({ path: path.join("."), message: issue.message });
		for (const key of keys.slice(0, MAX_ISSUES)) {
			issues.push({ path: [...path, key].join("."), message: "is not a field of this body" });
		}
		if (issues.length >= MAX_ISSUES) break;
	}
	return issues.slice(0, MAX_ISSUES);
}

/**
 * Parses a request body, which is a JSON object for every route of this API, with `schema`. Its
 * schemas are strict: a misspelt field is refused, never silently ignored (as in query strings).
 *
 * @throws ApiError 400 `invalid_request` with one issue per problem
 */
export function parseBody<T extends z.ZodMiniType>(schema: T, body: unknown): z.output<T> {
	if (body === null || typeof body !== "object" || Array.isArray(body)) {
		throw new ApiError(400, "invalid_request", "The request body is not valid", [
			{ path: "", message: "must be a JSON object" },
		]);
	}
	const parsed = z.safeParse(schema, body);
	if (!parsed.success) {
		throw new ApiError(
			400,
			"invalid_request",
			"The request body is not valid",
			toIssues(parsed.error),
		);
	}
	return parsed.data;
}

/**
 * The normalised address of a URL path parameter, refused for `problemOf`'s reason: by default
 * {@link mailboxProblem}, as for an address to store or mail; routes that only find what is
 * stored (removal, erasure, history) pass the lenient `emailProblem`.
 *
 * @throws ApiError 400 `invalid_email`
 * @example
 * emailFromPath("A%2Btag%40Example.com") // "a+tag@example.com"
 */
export function emailFromPath(
	raw: string | undefined,
	problemOf: (email: string) => string | null = mailboxProblem,
): string {
	let decoded: string;
	try {
		decoded = decodeURIComponent(raw ?? "");
	} catch {
		throw new ApiError(400, "invalid_email", "The address in the path is not validly URL-encoded", [
			{ path: "email", message: "must be validly URL-encoded" },
		]);
	}
	const email = normalizeEmail(decoded);
	const problem = problemOf(email);
	if (problem) {
		throw new ApiError(400, "invalid_email", `The address ${problem}`, [
			{ path: "email", message: problem },
		]);
	}
	return email;
}

/** A string that D1 stores as given: no lone surrogates, which UTF-8 cannot hold. */
export const wellFormed = z.refine<string>((value) => value.isWellFormed(), {
	error: "must be well-formed Unicode (no lone surrogates)",
});

/** An address in a query or a body: normalised, and refused with `problemOf`'s reason. */
function addressField(problemOf: (email: string) => string | null) {
	return z.pipe(
		z.string({
			error: (issue) => (issue.input === undefined ? "is required" : "must be a string"),
		}),
		z.pipe(
			z.transform(normalizeEmail),
			z.string().check(
				z.superRefine((value, ctx) => {
					const problem = problemOf(value);
					if (problem) ctx.addIssue({ code: "custom", input: value, message: problem });
				}),
			),
		),
	);
}

/**
 * An address to find among what is stored (a filter in a query string): plausible. A query
 * string reads `+` as a space, so a plus tag sent unencoded gets a hint.
 */
export const emailField = addressField((email) => {
	const problem = emailProblem(email);
	return problem && email.includes(" ")
		? `${problem} (a query string reads + as a space: send a plus tag as %2B)`
		: problem;
});
/** An address to store (an imported entry): one mailbox. */
export const mailboxField = addressField(mailboxProblem);

/** A sender domain as scopes and `fromDomain` hold it: trimmed, lower-cased, NFC. */
export const domainParam = z.pipe(
	z
		.string({ error: "must be a domain name" })
		.check(
			z.trim(),
			z.toLowerCase(),
			z.minLength(1, { error: "must not be empty" }),
			z.maxLength(MAX_DOMAIN_LENGTH, { error: `must be at most ${MAX_DOMAIN_LENGTH} characters` }),
			z.regex(DOMAIN_NAME, { error: "must be a domain name" }),
			wellFormed,
		),
	z.transform((value) => value.normalize("NFC")),
);

/**
 * An entry's reason: at most 4096 characters, as long as an event's reason may be, so that every
 * exported entry imports again; empty means none.
 */
export const reasonField = z.nullable(
	z.pipe(
		z
			.string({ error: "must be a string or null" })
			.check(z.maxLength(4096, { error: "must be at most 4096 characters" }), wellFormed),
		z.transform((value) => (value.trim() === "" ? null : value)),
	),
);
