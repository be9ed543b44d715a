// A small, safe Markdown renderer and code highlighter for the replies.
//
// Safe by construction: every piece of the model's text is HTML-escaped before any tag is
// added, and the only attributes written are a class name we choose and a link's href,
// which must be http(s) or mailto. It renders what chat models write (headings, emphasis,
// code, fenced blocks, lists, quotes, tables, links, paragraphs) and tolerates a reply cut
// mid-way, as it is re-rendered on every streamed piece.

export function escapeHtml(text) {
  return text
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&#39;");
}

// -- inline ----------------------------------------------------------------------------------

const SAFE_URL = /^(https?:\/\/|mailto:)/i;

// Replaced spans are parked as \u0000N\u0000 so later rules cannot touch their insides.
function inline(text) {
  const parked = [];
  const park = (html) => `\u0000${parked.push(html) - 1}\u0000`;
  let s = escapeHtml(text.replace(/\u0000/g, ""));
  s = s.replace(/(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)/g, (_, __, code) => park(`<code>${code.trim() || code}</code>`));
  s = s.replace(/!?\[([^\]\n]+)\]\(\s*([^\s)]+)(?:\s+&quot;[^\n]*?&quot;)?\s*\)/g, (whole, label, url) =>
    SAFE_URL.test(url) ? park(`<a href="${url}" target="_blank" rel="noopener noreferrer">${label}</a>`) : label);
  s = s.replace(/&lt;(https?:\/\/[^\s&]+)&gt;|\bhttps?:\/\/(?:&amp;|[^\s&\u0000])*(?:&amp;|[^\s&\u0000.,;:!?)*_~])/g, (url, bracketed) => {
    const href = bracketed || url;
    return park(`<a href="${href}" target="_blank" rel="noopener noreferrer">${href}</a>`);
  });
  s = s.replace(/\*\*(?=\S)([\s\S]*?\S)\*\*/g, "<strong>$1</strong>");
  s = s.replace(/(^|[^\w])__(?=\S)([\s\S]*?\S)__(?!\w)/g, "$1<strong>$2</strong>");
  s = s.replace(/(^|[^\w*])\*(?=[^\s*])([^*]*?[^\s*])\*(?!\*)/g, "$1<em>$2</em>");
  s = s.replace(/(^|[^\w])_(?=\S)([^_]*?\S)_(?!\w)/g, "$1<em>$2</em>");
  s = s.replace(/~~(?=\S)([\s\S]*?\S)~~/g, "<del>$1</del>");
  return s.replace(/\u0000(\d+)\u0000/g, (_, i) => parked[Number(i)]);
}

// -- blocks ----------------------------------------------------------------------------------

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^ {0,3}([-*_])(\s*\1){2,}\s*$/;
const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const QUOTE = /^ {0,3}> ?(.*)$/;
const TABLE_SEP = /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/;

function cells(line) {
  return line.trim().replace(/^\|/, "").replace(/\|$/, "").split("|").map((c) => inline(c.trim()));
}

function isBlockStart(line, next) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || ITEM.test(line) ||
    QUOTE.test(line) || (line.includes("|") && next !== undefined && TABLE_SEP.test(next));
}

function list(lines, start) {
  // Items at the first item's indent form this list; deeper lines belong to the last item.
  const indent = lines[start].match(ITEM)[1].length;
  const ordered = /\d/.test(lines[start].match(ITEM)[2]);
  const first = ordered ? parseInt(lines[start].match(ITEM)[2], 10) : 1;
  const items = [];
  let i = start;
  while (i < lines.length) {
    const m = lines[i].match(ITEM);
    if (m && m[1].length <= indent + 1) {
      if (/\d/.test(m[2]) !== ordered) break;
      items.push([m[3]]);
      i++;
      continue;
    }
    if (m && m[1].length < indent) break;
    if (items.length && lines[i].trim() && (m || /^\s/.test(lines[i]))) {
      items[items.length - 1].push(lines[i].slice(Math.min(indent + 2, lines[i].search(/\S/))));
      i++;
      continue;
    }
    if (!lines[i].trim() && i + 1 < lines.length && (ITEM.test(lines[i + 1]) || /^\s{2,}\S/.test(lines[i + 1]))) {
      i++;
      continue;
    }
    break;
  }
  const tag = ordered ? "ol" : "ul";
  const startAttr = ordered && first !== 1 ? ` start="${first}"` : "";
  const body = items.map((it) => {
    const [head, ...rest] = it;
    return `<li>${inline(head)}${rest.length ? blocks(rest) : ""}</li>`;
  }).join("");
  return [`<${tag}${startAttr}>${body}</${tag}>`, i];
}

function blocks(lines) {
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if (!line.trim()) {
      i++;
    } else if ((m = line.match(FENCE))) {
      const close = new RegExp(`^ {0,3}${m[1][0] === "`" ? "`" : "~"}{${m[1].length},}\\s*$`);
      const code = [];
      for (i++; i < lines.length && !close.test(lines[i]); i++) code.push(lines[i]);
      i++;
      const lang = m[2].toLowerCase();
      const label = lang ? `<span class="code-lang">${escapeHtml(lang)}</span>` : "";
      out.push(`<div class="code">${label}<pre><code>${highlight(code.join("\n"), lang)}</code></pre></div>`);
    } else if ((m = line.match(HEADING))) {
      out.push(`<h${m[1].length}>${inline(m[2])}</h${m[1].length}>`);
      i++;
    } else if (RULE.test(line)) {
      out.push("<hr>");
      i++;
    } else if (ITEM.test(line)) {
      const [html, next] = list(lines, i);
      out.push(html);
      i = next;
    } else if (QUOTE.test(line)) {
      const quoted = [];
      for (; i < lines.length && (m = lines[i].match(QUOTE)); i++) quoted.push(m[1]);
      out.push(`<blockquote>${blocks(quoted)}</blockquote>`);
    } else if (line.includes("|") && i + 1 < lines.length && TABLE_SEP.test(lines[i + 1])) {
      const head = cells(line).map((c) => `<th>${c}</th>`).join("");
      const rows = [];
      for (i += 2; i < lines.length && lines[i].includes("|") && lines[i].trim(); i++) {
        rows.push(`<tr>${cells(lines[i]).map((c) => `<td>${c}</td>`).join("")}</tr>`);
      }
      out.push(`<div class="table"><table><thead><tr>${head}</tr></thead><tbody>${rows.join("")}</tbody></table></div>`);
    } else {
      const para = [line.trim()];
      for (i++; i < lines.length && lines[i].trim() && !isBlockStart(lines[i], lines[i + 1]); i++) {
        para.push(lines[i].trim());
      }
      out.push(`<p>${para.map(inline).join("<br>")}</p>`);
    }
  }
  return out.join("");
}

/** The HTML of a Markdown text; every character of `text` is escaped. */
export function renderMarkdown(text) {
  return blocks(text.replace(/\r\n?/g, "\n").split("\n"));
}

// -- code highlighting -----------------------------------------------------------------------

const KEYWORDS = {
  c: "auto break case char const continue default do double else enum extern float for goto if " +
    "inline int long register return short signed sizeof static struct switch typedef union " +
    "unsigned void volatile while bool true false NULL nullptr class namespace template typename " +
    "public private protected virtual override new delete this using include define",
  js: "async await break case catch class const continue debugger default delete do else export " +
    "extends finally for from function if import in instanceof let new of return static super " +
    "switch this throw try typeof var void while with yield true false null undefined interface " +
    "type enum implements readonly as",
  java: "abstract boolean break byte case catch char class const continue default do double else " +
    "enum extends final finally float for if implements import instanceof int interface long new " +
    "package private protected public return short static super switch synchronized this throw " +
    "throws try void volatile while true false null var val fun when object string",
  go: "break case chan const continue default defer else fallthrough for func go goto if import " +
    "interface map package range return select struct switch type var true false nil",
  rust: "as async await break const continue crate dyn else enum extern false fn for if impl in " +
    "let loop match mod move mut pub ref return self Self static struct super trait true type " +
    "unsafe use where while Some None Ok Err",
  python: "and as assert async await break class continue def del elif else except False finally " +
    "for from global if import in is lambda None nonlocal not or pass raise return True try while " +
    "with yield self print",
  shell: "if then else elif fi for while until do done case esac function in return export local " +
    "echo cd exit set unset source sudo",
  ruby: "begin class def do else elsif end ensure false for if in module next nil not or puts " +
    "redo require rescue retry return self super then true unless until when while yield",
  sql: "select from where and or not insert into values update set delete create table drop alter " +
    "index join left right inner outer on as group by order having limit offset distinct null " +
    "primary key foreign references union all case when then else end is in like between",
  json: "true false null",
};

const LANGS = {
  c: ["c", "cpp", "c++", "cc", "h", "hpp", "cs", "csharp", "swift", "objc"],
  js: ["js", "javascript", "jsx", "ts", "typescript", "tsx", "mjs", "node"],
  java: ["java", "kotlin", "kt", "scala", "dart", "php"],
  go: ["go", "golang"],
  rust: ["rust", "rs"],
  python: ["python", "py", "python3"],
  shell: ["sh", "bash", "shell", "zsh", "console", "dockerfile", "make", "makefile", "yaml", "yml", "toml", "ini"],
  ruby: ["ruby", "rb"],
  sql: ["sql", "mysql", "postgres", "postgresql", "sqlite"],
  json: ["json", "jsonc"],
};

const FAMILY = {};
for (const [family, names] of Object.entries(LANGS)) for (const n of names) FAMILY[n] = family;

const HASH_COMMENTS = new Set(["python", "shell", "ruby"]);

function lexer(family) {
  const comments = family === "sql" ? "--[^\\n]*" : HASH_COMMENTS.has(family) ? "#[^\\n]*" :
    family === "json" ? "(?!)" : family ? "\\/\\/[^\\n]*|\\/\\*[\\s\\S]*?(?:\\*\\/|$)" :
      "\\/\\/[^\\n]*|\\/\\*[\\s\\S]*?(?:\\*\\/|$)|#[^\\n]*";
  const triple = family === "python" ? '"""[\\s\\S]*?(?:"""|$)|\'\'\'[\\s\\S]*?(?:\'\'\'|$)|' : "";
  const strings = `${triple}"(?:\\\\[\\s\\S]|[^"\\\\\\n])*"?|'(?:\\\\[\\s\\S]|[^'\\\\\\n])*'?|\`(?:\\\\[\\s\\S]|[^\`\\\\])*\`?`;
  const numbers = "\\b(?:0[xX][\\da-fA-F_]+|\\d[\\d_]*(?:\\.\\d+)?(?:[eE][+-]?\\d+)?)\\b";
  return new RegExp(`(${comments})|(${strings})|(${numbers})|([A-Za-z_$][\\w$]*)`, "g");
}

const WORDS = {};

/** `code` as HTML with spans of class tok-comment, tok-string, tok-number, tok-keyword. */
export function highlight(code, lang) {
  const family = FAMILY[lang] || "";
  if (!WORDS[family]) {
    const list = family ? KEYWORDS[family] : Object.values(KEYWORDS).join(" ");
    WORDS[family] = new Set(family === "sql" ? list.split(" ").flatMap((w) => [w, w.toUpperCase()]) : list.split(" "));
  }
  const words = WORDS[family];
  const re = lexer(family);
  let out = "";
  let last = 0;
  for (let m; (m = re.exec(code)); ) {
    if (m[0] === "") {
      re.lastIndex++;
      continue;
    }
    const kind = m[1] ? "comment" : m[2] ? "string" : m[3] ? "number" : words.has(m[4]) ? "keyword" : "";
    if (!kind) continue;
    out += escapeHtml(code.slice(last, m.index));
    out += `<span class="tok-${kind}">${escapeHtml(m[0])}</span>`;
    last = m.index + m[0].length;
  }
  return out + escapeHtml(code.slice(last));
}
