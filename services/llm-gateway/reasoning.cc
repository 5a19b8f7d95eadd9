// reasoning.cc — <think>…</think> blocks split out of the model's text, whole or streamed.
#include "reasoning.h"

#include <array>
#include <cctype>

namespace nv::llm {
namespace {

struct Tag {
  std::string_view text;
  bool open;
};
constexpr std::array<Tag, 4> kTags = {
    {{"<think>", true}, {"<thinking>", true}, {"</think>", false}, {"</thinking>", false}}};

bool space(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

std::string trimmed(std::string_view v) {
  size_t b = 0, e = v.size();
  while (b < e && space(v[b])) ++b;
  while (e > b && space(v[e - 1])) --e;
  return std::string(v.substr(b, e - b));
}

}  // namespace

void ThinkTagStream::out(std::string_view text, const DeltaFn& emit) {
  if (text.empty()) return;
  if (in_think_) {
    if (emit) emit(text, DeltaKind::thinking);
    return;
  }
  if (skip_space_) {
    while (!text.empty() && space(text.front())) text.remove_prefix(1);
    if (text.empty()) return;
    skip_space_ = false;
  }
  if (emit) emit(text, DeltaKind::content);
}

void ThinkTagStream::feed(std::string_view piece, const DeltaFn& emit) {
  held_.append(piece);
  size_t pos = 0;
  while (pos < held_.size()) {
    size_t lt = held_.find('<', pos);
    if (lt == std::string::npos) {
      out(std::string_view(held_).substr(pos), emit);
      pos = held_.size();
      break;
    }
    out(std::string_view(held_).substr(pos, lt - pos), emit);
    std::string_view rest = std::string_view(held_).substr(lt);
    const Tag* whole = nullptr;
    bool partial = false;
    for (const Tag& t : kTags) {
      if (rest.starts_with(t.text)) {
        whole = &t;
        break;
      }
      partial |= t.text.starts_with(rest);
    }
    if (whole) {
      if (whole->open) {
        in_think_ = true;
      } else {
        in_think_ = false;
        skip_space_ = true;  // also after a closing tag with no opening one
      }
      pos = lt + whole->text.size();
      continue;
    }
    if (partial) {  // "<thi" at the end: wait for the next piece
      pos = lt;
      break;
    }
    out(std::string_view(held_).substr(lt, 1), emit);
    pos = lt + 1;
  }
  held_.erase(0, pos);
}

void ThinkTagStream::finish(const DeltaFn& emit) {
  std::string rest = std::move(held_);
  held_.clear();
  out(rest, emit);
}

SplitText split_think_tags(std::string_view content) {
  SplitText r;
  bool any = false;
  // A closing tag before any opening one: the prompt template opened the block (qwen3).
  size_t first_open = std::string_view::npos, first_close = std::string_view::npos;
  for (const Tag& t : kTags) {
    size_t at = content.find(t.text);
    if (at == std::string_view::npos) continue;
    size_t& slot = t.open ? first_open : first_close;
    slot = std::min(slot, at);
  }
  if (first_close != std::string_view::npos &&
      (first_open == std::string_view::npos || first_close < first_open)) {
    r.thinking = trimmed(content.substr(0, first_close));
    size_t len = content.substr(first_close).starts_with("</thinking>") ? 11 : 8;
    content.remove_prefix(first_close + len);
    any = true;
  }
  ThinkTagStream stream;
  std::string thinking;
  DeltaFn collect = [&](std::string_view text, DeltaKind kind) {
    if (kind == DeltaKind::thinking) {
      thinking.append(text);
      any = true;
    } else {
      r.content.append(text);
    }
  };
  stream.feed(content, collect);
  stream.finish(collect);
  // A block with nothing inside still counts as a block.
  if (!any) {
    for (const Tag& t : kTags) any |= content.find(t.text) != std::string_view::npos;
  }
  if (!thinking.empty()) {
    std::string t = trimmed(thinking);
    if (!t.empty()) r.thinking += (r.thinking.empty() ? "" : "\n") + t;
  }
  if (any) r.content = trimmed(r.content);
  return r;
}

}  // namespace nv::llm
