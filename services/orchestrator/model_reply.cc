// model_reply.cc — calls in the text, execute_code's arguments, call ids and reply kinds.
#include "model_reply.h"

#include "common/json_depth.h"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <array>
#include <cctype>

namespace nv::agent {

namespace s = nv::schema;

std::string trimmed(std::string_view v) {
  size_t b = 0, e = v.size();
  while (b < e && std::isspace(static_cast<unsigned char>(v[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(v[e - 1]))) --e;
  return std::string(v.substr(b, e - b));
}

namespace {

std::string trim(std::string_view v) { return trimmed(v); }

std::string lower(std::string v) {
  for (auto& c : v) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return v;
}

std::string to_json(const rapidjson::Value& v) {
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  v.Accept(w);
  return std::string(sb.GetString(), sb.GetSize());
}

std::string xml_unescape(std::string_view v) {
  static const std::pair<std::string_view, char> kEntities[] = {
      {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}, {"&amp;", '&'}};
  std::string out;
  for (size_t i = 0; i < v.size();) {
    bool done = false;
    if (v[i] == '&') {
      for (auto [ent, ch] : kEntities) {
        if (v.substr(i, ent.size()) == ent) {
          out += ch;
          i += ent.size();
          done = true;
          break;
        }
      }
    }
    if (!done) out += v[i++];
  }
  return out;
}

// A call from a parsed JSON value: {"name", "arguments"|"parameters"} or {"function": {...}}.
std::optional<ParsedCall> call_from_json(const rapidjson::Value& v) {
  if (!v.IsObject()) return std::nullopt;
  if (v.HasMember("function") && v["function"].IsObject()) return call_from_json(v["function"]);
  if (!v.HasMember("name") || !v["name"].IsString()) return std::nullopt;
  const rapidjson::Value* args = nullptr;
  for (const char* key : {"arguments", "parameters", "args", "input"}) {
    if (v.HasMember(key)) {
      args = &v[key];
      break;
    }
  }
  if (args == nullptr) return std::nullopt;
  ParsedCall c;
  c.name = v["name"].GetString();
  if (args->IsString()) {
    c.arguments_json = args->GetString();  // arguments given as JSON text
  } else if (args->IsObject()) {
    c.arguments_json = to_json(*args);
  } else {
    return std::nullopt;
  }
  return c;
}

// Calls in a JSON document: one call object or an array of them.
std::vector<ParsedCall> calls_from_json_text(std::string_view text) {
  std::vector<ParsedCall> out;
  rapidjson::Document d;
  std::string t = trim(text);
  if (json_nesting_exceeds(t)) return out;  // the parser recurses per level
  d.Parse(t.c_str(), t.size());
  if (d.HasParseError()) return out;
  if (d.IsArray()) {
    for (auto& e : d.GetArray()) {
      if (auto c = call_from_json(e)) out.push_back(*c);
    }
  } else if (auto c = call_from_json(d)) {
    out.push_back(*c);
  }
  return out;
}

// The text between <tag ...> and </tag>, found from `from`; npos when absent.
struct Element {
  size_t begin = std::string_view::npos;  // of "<tag"
  size_t end = 0;                         // one past "</tag>"
  std::string attrs;                      // raw attribute text
  std::string inner;
};

std::optional<Element> find_element(std::string_view text, std::string_view tag, size_t from) {
  std::string open = "<" + std::string(tag);
  std::string close = "</" + std::string(tag) + ">";
  while (true) {
    size_t b = text.find(open, from);
    if (b == std::string_view::npos) return std::nullopt;
    size_t after = b + open.size();
    if (after < text.size() && text[after] != '>' &&
        !std::isspace(static_cast<unsigned char>(text[after]))) {
      from = after;  // <tag_other...>
      continue;
    }
    size_t gt = text.find('>', after);
    if (gt == std::string_view::npos) return std::nullopt;
    size_t c = text.find(close, gt + 1);
    if (c == std::string_view::npos) return std::nullopt;
    Element e;
    e.begin = b;
    e.end = c + close.size();
    e.attrs = std::string(text.substr(after, gt - after));
    e.inner = std::string(text.substr(gt + 1, c - gt - 1));
    return e;
  }
}

std::string attribute(const std::string& attrs, const std::string& name) {
  for (char q : {'"', '\''}) {
    std::string key = name + "=" + q;
    size_t p = attrs.find(key);
    if (p == std::string::npos) continue;
    size_t e = attrs.find(q, p + key.size());
    if (e == std::string::npos) continue;
    return xml_unescape(std::string_view(attrs).substr(p + key.size(), e - p - key.size()));
  }
  return {};
}

// Code inside XML keeps its own indentation; drop only the newline right after the opening tag
// and the blank end before the closing one. CDATA is unwrapped.
std::string element_code(std::string inner) {
  if (inner.starts_with("<![CDATA[") && inner.ends_with("]]>")) {
    return inner.substr(9, inner.size() - 12);
  }
  while (!inner.empty() && (inner.front() == '\n' || inner.front() == '\r')) inner.erase(0, 1);
  while (!inner.empty() && std::isspace(static_cast<unsigned char>(inner.back()))) inner.pop_back();
  return xml_unescape(inner);
}

// <arguments><k>v</k>...</arguments> → {"k": "v", ...}.
std::string xml_arguments_json(std::string_view inner) {
  rapidjson::Document d(rapidjson::kObjectType);
  auto& a = d.GetAllocator();
  size_t pos = 0;
  while (true) {
    size_t lt = inner.find('<', pos);
    if (lt == std::string_view::npos || lt + 1 >= inner.size() || inner[lt + 1] == '/') break;
    size_t gt = inner.find('>', lt);
    if (gt == std::string_view::npos) break;
    std::string tag(inner.substr(lt + 1, gt - lt - 1));
    if (size_t sp = tag.find_first_of(" \t\n"); sp != std::string::npos) tag.resize(sp);
    auto el = find_element(inner, tag, lt);
    if (!el) break;
    std::string value = tag == "code" ? element_code(el->inner) : trim(xml_unescape(el->inner));
    d.AddMember(rapidjson::Value(tag.c_str(), a), rapidjson::Value(value.c_str(), a), a);
    pos = el->end;
  }
  return to_json(d);
}

// The end of the balanced JSON object starting at text[b] == '{' (string-aware), or npos.
size_t json_object_end(std::string_view text, size_t b) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = b; i < text.size(); ++i) {
    char c = text[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"')
      in_string = true;
    else if (c == '{')
      ++depth;
    else if (c == '}' && --depth == 0)
      return i + 1;
  }
  return std::string_view::npos;
}

}  // namespace

std::vector<ParsedCall> parse_text_tool_calls(std::string_view text) {
  std::vector<std::pair<size_t, ParsedCall>> found;
  std::string rest(text);  // consumed regions are blanked so later passes do not see them twice
  auto consume = [&](size_t b, size_t e) { std::fill(rest.begin() + b, rest.begin() + e, ' '); };

  // 1. <tool_call>…</tool_call>: JSON inside (Hermes/Qwen style) or XML name/arguments.
  for (size_t from = 0;;) {
    auto el = find_element(rest, "tool_call", from);
    if (!el) break;
    std::string inner = trim(el->inner);
    if (inner.starts_with("{") || inner.starts_with("[")) {
      for (auto& c : calls_from_json_text(inner)) found.emplace_back(el->begin, c);
    } else if (auto name = find_element(inner, "name", 0)) {
      ParsedCall c;
      c.name = trim(xml_unescape(name->inner));
      auto args = find_element(inner, "arguments", 0);
      c.arguments_json = args ? xml_arguments_json(args->inner) : "{}";
      found.emplace_back(el->begin, c);
    }
    consume(el->begin, el->end);
    from = el->end;
  }
  // 2. <execute_code language="python">CODE</execute_code> (or <language>/<code> children).
  for (size_t from = 0;;) {
    auto el = find_element(rest, "execute_code", from);
    if (!el) break;
    ParsedCall c;
    c.name = "execute_code";
    std::string language = attribute(el->attrs, "language");
    if (language.empty() && find_element(el->inner, "code", 0)) {
      c.arguments_json = xml_arguments_json(el->inner);
    } else {
      rapidjson::Document d(rapidjson::kObjectType);
      auto& a = d.GetAllocator();
      std::string code = element_code(el->inner);
      d.AddMember("language", rapidjson::Value(language.c_str(), a), a);
      d.AddMember("code", rapidjson::Value(code.c_str(), a), a);
      c.arguments_json = to_json(d);
    }
    found.emplace_back(el->begin, c);
    consume(el->begin, el->end);
    from = el->end;
  }
  // 3. Fenced blocks whose body is a JSON call: ```json, ```tool_call, ``` (other languages are
  //    code the model shows, not calls).
  for (size_t from = 0;;) {
    size_t b = rest.find("```", from);
    if (b == std::string::npos) break;
    size_t nl = rest.find('\n', b + 3);
    if (nl == std::string::npos) break;
    size_t e = rest.find("```", nl + 1);
    if (e == std::string::npos) break;
    std::string lang = lower(trim(std::string_view(rest).substr(b + 3, nl - b - 3)));
    if (lang.empty() || lang == "json" || lang == "tool_call" || lang == "tool_code") {
      auto calls = calls_from_json_text(std::string_view(rest).substr(nl + 1, e - nl - 1));
      for (auto& c : calls) found.emplace_back(b, c);
      if (!calls.empty()) consume(b, e + 3);
    }
    from = e + 3;
  }
  // 4. Bare JSON objects in the text that name a tool and carry arguments. Every '{' is a
  //    candidate and each costs a scan to its end, so text full of braces would take quadratic
  //    time: the scans share a budget linear in the text's length.
  size_t budget = 8 * rest.size() + 64 * 1024;
  for (size_t from = 0;;) {
    size_t b = rest.find('{', from);
    if (b == std::string::npos) break;
    size_t e = json_object_end(rest, b);
    size_t cost = (e == std::string::npos ? rest.size() : e) - b;
    if (e != std::string::npos) cost *= 2;  // the scan, then the parse
    if (cost > budget) break;
    budget -= cost;
    if (e == std::string::npos) {
      from = b + 1;
      continue;
    }
    auto calls = calls_from_json_text(std::string_view(rest).substr(b, e - b));
    if (calls.empty()) {
      from = b + 1;  // maybe an inner object is the call
      continue;
    }
    for (auto& c : calls) found.emplace_back(b, c);
    consume(b, e);
    from = e;
  }
  std::stable_sort(found.begin(), found.end(),
                   [](const auto& x, const auto& y) { return x.first < y.first; });
  std::vector<ParsedCall> out;
  for (auto& [pos, c] : found) out.push_back(std::move(c));
  return out;
}

// ------------------------------------------------------------------ execute_code arguments

bool language_from_name(std::string_view name, s::Language* out) {
  std::string n;
  for (char c : name) {
    if (!std::isspace(static_cast<unsigned char>(c))) {
      n += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
  }
  static const std::array<std::pair<std::string_view, s::Language>, 15> kNames = {{
      {"python", s::Language::PYTHON},
      {"python3", s::Language::PYTHON},
      {"py", s::Language::PYTHON},
      {"py3", s::Language::PYTHON},
      {"bash", s::Language::BASH},
      {"shell", s::Language::BASH},
      {"zsh", s::Language::BASH},
      {"sh", s::Language::SH},
      {"posix", s::Language::SH},
      {"javascript", s::Language::JAVASCRIPT},
      {"js", s::Language::JAVASCRIPT},
      {"node", s::Language::JAVASCRIPT},
      {"nodejs", s::Language::JAVASCRIPT},
      {"node.js", s::Language::JAVASCRIPT},
      {"mjs", s::Language::JAVASCRIPT},
  }};
  for (auto [k, v] : kNames) {
    if (n == k) {
      *out = v;
      return true;
    }
  }
  return false;
}

namespace {

// "```python" / "~~~~ js {.x}" → fence char, its run length and the info string's first word.
bool fence_line(std::string_view line, char* ch, size_t* run, std::string* tag) {
  size_t i = 0;
  while (i < line.size() && i < 3 && line[i] == ' ') ++i;  // up to 3 spaces of indent
  if (i >= line.size() || (line[i] != '`' && line[i] != '~')) return false;
  char c = line[i];
  size_t n = 0;
  while (i + n < line.size() && line[i + n] == c) ++n;
  if (n < 3) return false;
  std::string info = trimmed(line.substr(i + n));
  if (c == '`' && info.find('`') != std::string::npos) return false;  // inline code, not a fence
  *ch = c;
  *run = n;
  size_t sp = info.find_first_of(" \t{");
  *tag = lower(info.substr(0, sp));
  return true;
}

}  // namespace

Fence strip_code_fence(std::string_view code) {
  Fence f;
  f.code = std::string(code);
  // Lines without their "\n" / "\r\n"; blank lines around the block are dropped.
  std::vector<std::string_view> lines;
  for (size_t at = 0; at <= code.size();) {
    size_t nl = code.find('\n', at);
    std::string_view line = code.substr(at, nl == std::string_view::npos ? code.npos : nl - at);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    lines.push_back(line);
    if (nl == std::string_view::npos) break;
    at = nl + 1;
  }
  auto blank = [](std::string_view l) { return trimmed(l).empty(); };
  size_t b = 0, e = lines.size();
  while (b < e && blank(lines[b])) ++b;
  while (e > b && blank(lines[e - 1])) --e;
  char ch = 0;
  size_t run = 0;
  std::string tag;
  if (b >= e || !fence_line(lines[b], &ch, &run, &tag)) return f;
  size_t body_end = e;  // no closing fence: a reply cut before it
  if (e - b >= 2) {
    std::string t = trimmed(lines[e - 1]);
    if (t.size() >= run && t.find_first_not_of(ch) == std::string::npos) body_end = e - 1;
  }
  size_t body_begin = b + 1;
  while (body_begin < body_end && blank(lines[body_begin])) ++body_begin;
  std::string body;
  for (size_t i = body_begin; i < body_end; ++i) {
    body.append(lines[i]);
    body += '\n';
  }
  f.found = true;
  f.code = std::move(body);
  f.tag = std::move(tag);
  return f;
}

namespace {

// The arguments of a call as a JSON object in `d`: the text itself, or the object held in a JSON
// string (arguments encoded twice). An empty text is {}. False, with *why saying so (and `usage`
// after it), when it is neither.
bool arguments_object(std::string_view arguments_json, rapidjson::Document& d, std::string* why,
                      const std::string& usage) {
  std::string text(trimmed(arguments_json).empty() ? std::string_view("{}") : arguments_json);
  bool too_deep = json_nesting_exceeds(text);  // the parser recurses per level
  if (!too_deep) d.Parse(text.c_str(), text.size());
  if (!too_deep && !d.HasParseError() && d.IsString()) {  // arguments encoded twice
    std::string inner = d.GetString();
    too_deep = json_nesting_exceeds(inner);
    if (!too_deep) d.Parse(inner.c_str(), inner.size());
  }
  if (too_deep || d.HasParseError() || !d.IsObject()) {
    std::string shown = text.size() > 120 ? text.substr(0, 120) + "…" : text;
    *why = "the arguments are not a JSON object (got: " + shown + "); " + usage;
    return false;
  }
  return true;
}

// The keys of `d` not in `known`, quoted and comma-separated ("" = none).
std::string unknown_keys(const rapidjson::Document& d,
                         std::initializer_list<std::string_view> known) {
  std::string out;
  for (auto& m : d.GetObject()) {
    std::string_view k(m.name.GetString(), m.name.GetStringLength());
    if (std::find(known.begin(), known.end(), k) != known.end()) continue;
    out += (out.empty() ? "\"" : ", \"") + std::string(k) + "\"";
  }
  return out;
}

}  // namespace

std::optional<CodeArgs> parse_code_args(std::string_view arguments_json, std::string* why) {
  const std::string usage =
      "execute_code takes {\"language\": \"python\" | \"bash\" | \"javascript\", \"code\": "
      "\"<program>\"}";
  rapidjson::Document d;
  if (!arguments_object(arguments_json, d, why, usage)) return std::nullopt;
  std::string ignored = unknown_keys(d, {"language", "code"});
  if (!d.HasMember("code") || !d["code"].IsString()) {
    *why = "the \"code\" argument is missing or not a string" +
           (ignored.empty() ? std::string() : " (unknown arguments: " + ignored + ")") + "; " +
           usage;
    return std::nullopt;
  }
  CodeArgs out;
  out.code = std::string(d["code"].GetString(), d["code"].GetStringLength());
  Fence fence = strip_code_fence(out.code);
  if (fence.found) out.code = std::move(fence.code);
  if (trim(out.code).empty()) {
    *why = "the \"code\" argument is empty; " + usage;
    return std::nullopt;
  }
  std::string lang = d.HasMember("language") && d["language"].IsString()
                         ? trim(d["language"].GetString())
                         : std::string();
  bool from_fence = lang.empty() && !fence.tag.empty();
  if (from_fence) lang = fence.tag;
  if (!language_from_name(lang, &out.language)) {
    *why = (lang.empty() ? std::string("the \"language\" argument is missing")
            : from_fence ? "the code's fence says \"" + lang +
                               "\", which is not an available language, and the \"language\" "
                               "argument is missing"
                         : "language \"" + lang + "\" is not available") +
           "; " + usage;
    return std::nullopt;
  }
  if (!ignored.empty()) {
    out.note = "note: execute_code takes only \"language\" and \"code\"; ignored " + ignored;
  }
  return out;
}

// ------------------------------------------------------------------ write_file and read_file

std::string sandbox_path(std::string_view path) {
  std::string p = trimmed(path);
  if (p.empty() || p.size() > 4096 || p.find('\0') != std::string::npos) return {};
  std::string home(kAgentHome);
  if (p == "~" || p == ".") return home;
  if (p.rfind("~/", 0) == 0) return home + p.substr(1);
  if (p.rfind("./", 0) == 0) p = p.substr(2);
  if (p[0] == '/') return p;
  return home + "/" + p;
}

namespace {

// A "path" argument → an absolute guest path, or "" and *why.
std::string path_argument(const rapidjson::Document& d, const std::string& usage,
                          std::string* why) {
  if (!d.HasMember("path") || !d["path"].IsString()) {
    *why = "the \"path\" argument is missing or not a string; " + usage;
    return {};
  }
  std::string p = sandbox_path({d["path"].GetString(), d["path"].GetStringLength()});
  if (p.empty()) {
    *why = "the \"path\" argument is empty, longer than 4096 bytes or holds a NUL byte; " + usage;
  }
  return p;
}

// An optional non-negative integer argument (a JSON number, or a string of digits as some
// models write it). False with *why when present and not such a number.
bool count_argument(const rapidjson::Document& d, const char* key, uint64_t* out,
                    const std::string& usage, std::string* why) {
  if (!d.HasMember(key) || d[key].IsNull()) return true;
  const auto& v = d[key];
  if (v.IsUint64()) {
    *out = v.GetUint64();
    return true;
  }
  if (v.IsDouble() && v.GetDouble() >= 0 && v.GetDouble() < 9.0e15 &&
      v.GetDouble() == static_cast<double>(static_cast<uint64_t>(v.GetDouble()))) {
    *out = static_cast<uint64_t>(v.GetDouble());
    return true;
  }
  if (v.IsString()) {
    std::string t = trimmed({v.GetString(), v.GetStringLength()});
    bool digits = !t.empty() && t.size() <= 15 &&
                  std::all_of(t.begin(), t.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (digits) {
      *out = std::stoull(t);
      return true;
    }
  }
  *why = std::string("the \"") + key +
         "\" argument must be a whole number of bytes, 0 or more (got " + to_json(v) + "); " +
         usage;
  return false;
}

}  // namespace

std::optional<WriteArgs> parse_write_args(std::string_view arguments_json, std::string* why) {
  const std::string usage =
      "write_file takes {\"path\": \"<file, relative to /home/agent or absolute>\", "
      "\"content\": \"<the whole text of the file>\"}";
  rapidjson::Document d;
  if (!arguments_object(arguments_json, d, why, usage)) return std::nullopt;
  WriteArgs out;
  out.path = path_argument(d, usage, why);
  if (out.path.empty()) return std::nullopt;
  if (!d.HasMember("content") || !d["content"].IsString()) {
    *why = "the \"content\" argument is missing or not a string; " + usage;
    return std::nullopt;
  }
  out.content.assign(d["content"].GetString(), d["content"].GetStringLength());
  if (std::string ignored = unknown_keys(d, {"path", "content"}); !ignored.empty()) {
    out.note = "note: write_file takes only \"path\" and \"content\"; ignored " + ignored;
  }
  return out;
}

std::optional<ReadArgs> parse_read_args(std::string_view arguments_json, std::string* why) {
  const std::string usage =
      "read_file takes {\"path\": \"<file, relative to /home/agent or absolute>\"} and, to read "
      "a part, \"offset\" and \"length\" in bytes";
  rapidjson::Document d;
  if (!arguments_object(arguments_json, d, why, usage)) return std::nullopt;
  ReadArgs out;
  out.path = path_argument(d, usage, why);
  if (out.path.empty()) return std::nullopt;
  if (!count_argument(d, "offset", &out.offset, usage, why) ||
      !count_argument(d, "length", &out.length, usage, why)) {
    return std::nullopt;
  }
  if (std::string ignored = unknown_keys(d, {"path", "offset", "length"}); !ignored.empty()) {
    out.note = "note: read_file takes only \"path\", \"offset\" and \"length\"; ignored " + ignored;
  }
  return out;
}

// --------------------------------------------------------------------------------- the reply

void assign_call_ids(std::vector<ModelCall>& calls, uint32_t iteration,
                     std::set<std::string>& used) {
  for (size_t i = 0; i < calls.size(); ++i) {
    ModelCall& c = calls[i];
    bool keep = !trim(c.id).empty() && c.id.size() <= 128 && !used.count(c.id);
    if (!keep) {
      std::string base = "call_" + std::to_string(iteration) + "_" + std::to_string(i);
      c.id = base;
      for (int n = 2; used.count(c.id); ++n) c.id = base + "_" + std::to_string(n);
    }
    used.insert(c.id);
  }
}

std::string history_arguments(std::string_view arguments_json) {
  if (json_nesting_exceeds(arguments_json)) return "{}";  // the parser recurses per level
  rapidjson::Document d;
  d.Parse(arguments_json.data(), arguments_json.size());
  if (!d.HasParseError() && d.IsObject()) return std::string(arguments_json);
  return "{}";
}

ReplyKind classify_reply(std::string_view content, size_t calls, std::string_view done_reason) {
  if (calls > 0) return ReplyKind::calls;
  // "length": OpenAI, vLLM, llama.cpp, Ollama; "max_tokens" / "MAX_TOKENS": servers that pass
  // Anthropic's or Gemini's own reason through.
  std::string reason = lower(std::string(done_reason));
  if (reason == "length" || reason == "max_tokens") return ReplyKind::cut;
  if (trim(content).empty()) return ReplyKind::empty;
  return ReplyKind::answer;
}

std::string ask_again_message(ReplyKind kind) {
  if (kind == ReplyKind::cut) {
    return "Your reply was cut off at the output token limit before it was complete. Reply "
           "again, shorter: give the final answer in plain text, or call execute_code.";
  }
  return "Your reply was empty. Reply again: give the final answer in plain text, or call "
         "execute_code.";
}

std::string ask_again_notice(ReplyKind kind, std::string_view done_reason) {
  std::string reason = done_reason.empty() ? "none" : std::string(done_reason);
  return (kind == ReplyKind::cut ? "the model's reply was cut at its token limit"
                                 : "the model's reply was empty") +
         std::string(" (done reason \"") + reason + "\"); asking it once more";
}

std::string reply_cut_error(ReplyKind kind, std::string_view done_reason) {
  std::string reason = done_reason.empty() ? "none" : std::string(done_reason);
  return (kind == ReplyKind::cut
              ? "the model's reply was cut at its token limit (done reason \"" + reason +
                    "\") again after it was asked once more: no final answer; raise the "
                    "model's output limit (Ollama num_predict, OpenAI max_tokens) or ask for "
                    "less"
              : "the model's reply was empty (done reason \"" + reason +
                    "\") again after it was asked once more: no final answer; try another "
                    "model or rephrase the task");
}

}  // namespace nv::agent
