// model.cpp - `nft -f` text of the object model.
#include "model.hpp"

#include <netinet/in.h>  // before linux/netfilter.h (redefinition of in_addr otherwise)

#include <linux/netfilter.h>

#include <sstream>

namespace fwe::nft {

std::string hook_name(std::uint32_t hooknum) {
  switch (hooknum) {
    case NF_INET_PRE_ROUTING:
      return "prerouting";
    case NF_INET_LOCAL_IN:
      return "input";
    case NF_INET_FORWARD:
      return "forward";
    case NF_INET_LOCAL_OUT:
      return "output";
    case NF_INET_POST_ROUTING:
      return "postrouting";
    default:
      return "unknown";
  }
}

std::string Rule::text() const {
  std::string out;
  for (const auto& word : words) {
    if (!out.empty()) out += ' ';
    out += word;
  }
  if (!comment.empty()) out += " comment \"" + comment + '"';
  return out;
}

std::string Table::text() const {
  std::ostringstream out;
  out << "table inet " << kTableName << "\ndelete table inet " << kTableName << "\ntable inet " << kTableName
      << " {\n";
  for (const auto& set : sets) {
    out << "\tset " << set.name << " {\n\t\ttype "
        << (set.key_type == KeyType::ipv4_addr ? "ipv4_addr" : "ipv6_addr") << "\n";
    if (set.interval) out << "\t\tflags interval\n";
    if (!set.element_text.empty()) {
      out << "\t\telements = { ";
      for (std::size_t i = 0; i < set.element_text.size(); ++i) out << (i ? ", " : "") << set.element_text[i];
      out << " }\n";
    }
    out << "\t}\n";
  }
  for (const auto& chain : chains) {
    out << "\tchain " << chain.name << " {\n";
    if (chain.hook)
      out << "\t\ttype " << chain.hook->type << " hook " << hook_name(chain.hook->hooknum) << " priority "
          << chain.hook->priority << "; policy accept;\n";
    for (const auto& rule : chain.rules) out << "\t\t" << rule.text() << "\n";
    out << "\t}\n";
  }
  out << "}\n";
  return out.str();
}

}  // namespace fwe::nft
