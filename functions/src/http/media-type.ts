/** A Content-Type header as the platform's body parsers read it. */
export interface MediaType {
  /** `type/subtype`, lower case, without its `+suffix`. */
  readonly essence: string;
  /** The structured-syntax suffix (`json` of `application/vnd.api+json`), lower case. */
  readonly suffix?: string;
  /** Parameter names in lower case, values unquoted; a repeated name keeps its last value. */
  readonly parameters: ReadonlyMap<string, string>;
}

// The grammar of media-typer 0.3.0, through which type-is 1.6.18 decides whether any of
// body-parser 1.20.9's parsers takes a body (firebase-tools 15.34's Functions runtime; the
// Functions Framework sets up the same parsers). A header it cannot parse matches none of them,
// not even `raw` for `*/*`, and the function is given no body at all.
const TYPE = /^ *([A-Za-z0-9][A-Za-z0-9!#$&^_-]{0,126})\/([A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}) *$/;
const PARAMETER = /; *([!#$%&'*+\-.0-9A-Z^_`a-z|~]+) *= *("(?:[ !\u0023-\u005b\u005d-\u007e\u0080-\u00ff]|\\[\u0020-\u007e])*"|[!#$%&'*+\-.0-9A-Z^_`a-z|~]+) */y;
const SUBTYPE = /^[a-z0-9][a-z0-9!#$&^_.-]{0,126}$/;
const SUFFIX = /^[a-z0-9][a-z0-9!#$&^_-]{0,126}$/;

/** The media type `header` names, or undefined when the platform's parsers could not read it. */
export function parseMediaType(header: string): MediaType | undefined {
  const end = header.indexOf(";");
  const match = TYPE.exec((end < 0 ? header : header.slice(0, end)).toLowerCase());
  if (!match) return undefined;
  const [, type = "", full = ""] = match;
  const plus = full.lastIndexOf("+");
  const subtype = plus < 0 ? full : full.slice(0, plus);
  // A `+` that ends the subtype names no suffix: media-typer drops it.
  const suffix = plus < 0 || plus === full.length - 1 ? undefined : full.slice(plus + 1);
  if (!SUBTYPE.test(subtype) || (suffix !== undefined && !SUFFIX.test(suffix))) return undefined;
  const parameters = new Map<string, string>();
  for (let at = end; at >= 0 && at < header.length; ) {
    PARAMETER.lastIndex = at;
    const parameter = PARAMETER.exec(header);
    if (!parameter) return undefined;
    const [whole, name = "", value = ""] = parameter;
    parameters.set(name.toLowerCase(), value.startsWith('"') ? value.slice(1, -1).replace(/\\([\u0020-\u007e])/g, "$1") : value);
    at += whole.length;
  }
  return { essence: `${type}/${subtype}`, ...(suffix === undefined ? {} : { suffix }), parameters };
}
