import * as z from "zod/mini";
import { domainParam } from "../validate";
import { ANY_SCOPE, LISTS } from "./policy";

/** A list's name, as a query, a PUT body or an import line gives it. */
export const listField = z.enum(LISTS, { error: `must be one of ${LISTS.join(", ")}` });

/** An entry's scope, as a query, a PUT body or an import line gives it: `*` or a sender domain. */
export const scopeField = z.union([z.literal(ANY_SCOPE), domainParam], {
	error: 'must be "*" or a domain',
});
