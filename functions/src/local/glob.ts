/**
 * A Hosting `source` glob as a regular expression: `**` spans segments, `*` stays within one and
 * matches at least one character, as Hosting's matcher (superstatic's minimatch) does: a
 * trailing slash, as in `/api/v1/chatbot/session/`, is no empty segment for `session/*` to take.
 */
export function globToRegExp(glob: string): RegExp {
  let pattern = "";
  for (let i = 0; i < glob.length; i += 1) {
    const char = glob[i] ?? "";
    if (char === "*" && glob[i + 1] === "*") {
      pattern += ".*";
      i += 1;
    } else if (char === "*") {
      pattern += "[^/]+";
    } else {
      pattern += char.replace(/[.+?^${}()|[\]\\]/g, "\\$&");
    }
  }
  return new RegExp(`^${pattern}/?$`);
}
