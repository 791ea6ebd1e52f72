// reader.cpp - firewalld's loader (firewall/core/fw.py and core/io/*.py in 1.3.3, as facts): file
// discovery, the per-type XML readers, combined zones, firewalld.conf, and the cross-object checks.
#include "reader.hpp"

#include <algorithm>
#include <filesystem>
#include <functional>
#include <set>
#include <span>
#include <sstream>
#include <system_error>

#include "fwengine/source_text.hpp"
#include "rich.hpp"
#include "values.hpp"
#include "xml.hpp"

namespace fwe::firewalld {
namespace {

namespace fs = std::filesystem;

// ---- element schemas: which elements a file type knows and their attributes ----------------------
// An element outside its schema, a missing required attribute or an unknown attribute is a parse
// error in every firewalld version (parser_check_element_attrs), so the whole configuration fails.
struct AttributeSpec {
  std::vector<std::string_view> required, optional;
};
using Schema = std::map<std::string_view, AttributeSpec>;

const Schema& rule_schema_part() {
  static const Schema schema = {
      {"rule", {{}, {"family", "priority"}}},
      {"source", {{}, {"address", "mac", "invert", "family", "ipset"}}},
      {"destination", {{}, {"address", "invert", "ipset"}}},
      {"service", {{"name"}, {}}},
      {"port", {{"port", "protocol"}, {}}},
      {"protocol", {{"value"}, {}}},
      {"source-port", {{"port", "protocol"}, {}}},
      {"icmp-block", {{"name"}, {}}},
      {"icmp-type", {{"name"}, {}}},
      {"masquerade", {{}, {"enabled"}}},
      {"forward-port", {{"port", "protocol"}, {"to-port", "to-addr"}}},
      {"tcp-mss-clamp", {{}, {"value"}}},
      {"log", {{}, {"prefix", "level"}}},
      {"nflog", {{}, {"group", "prefix", "queue-size"}}},
      {"audit", {{}, {}}},
      {"accept", {{}, {}}},
      {"reject", {{}, {"type"}}},
      {"drop", {{}, {}}},
      {"mark", {{"set"}, {}}},
      {"limit", {{"value"}, {}}},
      {"short", {{}, {}}},
      {"description", {{}, {}}},
  };
  return schema;
}

Schema zone_schema(Compat compat) {
  Schema schema = rule_schema_part();
  schema["zone"] = {{}, {"name", "immutable", "target", "version"}};
  if (compat == Compat::v2)
    schema["zone"].optional.insert(schema["zone"].optional.end(), {"ingress-priority", "egress-priority"});
  schema["interface"] = {{"name"}, {}};
  schema["forward"] = {{}, {}};
  schema["icmp-block-inversion"] = {{}, {}};
  if (compat == Compat::v2) schema["limit"].optional.push_back("burst");  // 2.2+
  return schema;
}

Schema policy_schema(Compat compat) {
  Schema schema = rule_schema_part();
  schema["policy"] = {{"target"}, {"version", "priority"}};
  schema["ingress-zone"] = {{"name"}, {}};
  schema["egress-zone"] = {{"name"}, {}};
  if (compat == Compat::v2) {
    schema["disable"] = {{}, {}};                 // 2.4+; its stock gateway policies have it
    schema["limit"].optional.push_back("burst");  // 2.2+
  }
  return schema;
}

// The longest zone and policy names (the part before a combined zone's '/'): 2.5 allows 96 and 128;
// 1.3 allowed what fitted iptables' 28-character chain names with its longest prefix and suffix.
std::size_t max_zone_name(Compat compat) {
  return compat == Compat::v2 ? 96 : 17;
}
std::size_t max_policy_name(Compat compat) {
  return compat == Compat::v2 ? 128 : 18;
}

const Schema& service_schema() {
  static const Schema schema = {
      {"short", {}},
      {"description", {}},
      {"service", {{}, {"name", "version"}}},
      {"port", {{}, {"port", "protocol"}}},
      {"protocol", {{}, {"value"}}},
      {"module", {{}, {"name"}}},
      {"destination", {{}, {"ipv4", "ipv6"}}},
      {"source-port", {{}, {"port", "protocol"}}},
      {"include", {{}, {"service"}}},
      {"helper", {{}, {"name"}}},
  };
  return schema;
}

const Schema& ipset_schema() {
  static const Schema schema = {{"short", {}},
                                {"description", {}},
                                {"ipset", {{"type"}, {"version"}}},
                                {"option", {{"name"}, {"value"}}},
                                {"entry", {}}};
  return schema;
}

const Schema& icmptype_schema() {
  static const Schema schema = {{"short", {}},
                                {"description", {}},
                                {"icmptype", {{}, {"name", "version"}}},
                                {"destination", {{}, {"ipv4", "ipv6"}}}};
  return schema;
}

const Schema& helper_schema() {
  static const Schema schema = {{"short", {}},
                                {"description", {}},
                                {"helper", {{"module"}, {"name", "version", "family"}}},
                                {"port", {{}, {"port", "protocol"}}}};
  return schema;
}

const Schema& direct_schema() {
  static const Schema schema = {{"direct", {}},
                                {"chain", {{"ipv", "table", "chain"}, {}}},
                                {"rule", {{"ipv", "table", "chain", "priority"}, {}}},
                                {"passthrough", {{"ipv"}, {}}}};
  return schema;
}

const std::set<std::string_view> kIpsetTypes = {
    "hash:ip",      "hash:ip,port",  "hash:ip,port,ip",   "hash:ip,port,net", "hash:ip,mark", "hash:net",
    "hash:net,net", "hash:net,port", "hash:net,port,net", "hash:net,iface",   "hash:mac"};
const std::set<std::string_view> kSourceIpsetTypes = {
    "hash:ip", "hash:ip,port", "hash:ip,mark", "hash:net", "hash:net,port", "hash:net,iface", "hash:mac"};

std::string lowered(std::string value) {
  for (char& c : value) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return value;
}

bool is_yes(const std::string& value) {
  const std::string v = lowered(value);
  return v == "yes" || v == "true";
}

std::string attribute(const xml::Element& e, std::string_view key) {
  const std::string* value = e.attribute(key);
  return value ? *value : std::string();
}

// "10.0.0.0/255.0.255.0": an IPv4 address with a dotted mask, which firewalld accepts even when the
// mask's bits are not contiguous.
bool has_dotted_mask(const std::string& text) {
  const std::size_t slash = text.find('/');
  return slash != std::string::npos && text.find('.', slash) != std::string::npos &&
         parse_single_address(text.substr(0, slash), Family::ipv4) &&
         parse_single_address(text.substr(slash + 1), Family::ipv4);
}

// A zone as read from one file, with what firewalld compares bindings by (the strings as written).
struct ZoneFile {
  Zone zone;
  std::vector<std::string> source_keys;  // parallel to zone.sources: "10.0.0.0/8", "ipset:name"
};

class Loader {
 public:
  Loader(const ReadRequest& request, Diagnostics& diag)
      : request_(request),
        diag_(diag),
        lenient_(request.compat == Compat::v1_3 ? Severity::warning : Severity::error) {
    config_.compat = request.compat;
    config_dirs_ =
        request.config_dirs.empty() ? std::vector<std::string>{"/etc/firewalld"} : request.config_dirs;
  }

  Config run() {
    std::error_code error;
    for (const auto& dir : config_dirs_)
      if (fs::exists(dir, error) && !fs::is_directory(dir, error))
        diag_.error(
            {}, "firewalld configuration " + dir + " is a file, not a directory",
            "give the directory that holds it, like /etc/firewalld (zones/, services/, ...), with -f");
      else if (!fs::is_directory(dir, error))
        diag_.error({}, "firewalld configuration directory " + dir + " does not exist",
                    "give an /etc/firewalld-like directory with -f");
    if (!fs::is_directory(request_.defaults_dir, error))
      diag_.error(diag_.option_value_loc("defaults"),
                  "firewalld defaults directory " + request_.defaults_dir + " does not exist",
                  "install firewalld's stock configuration or give --firewalld-defaults DIR");
    if (diag_.has_errors()) return std::move(config_);
    read_settings();
    for_each_file("ipsets", [&](const std::string& name, const xml::Element& root, std::uint32_t file) {
      read_ipset(name, root, file);
    });
    for_each_file("icmptypes", [&](const std::string& name, const xml::Element& root, std::uint32_t file) {
      read_icmptype(name, root, file);
    });
    for_each_file("helpers", [&](const std::string& name, const xml::Element& root, std::uint32_t file) {
      read_helper(name, root, file);
    });
    for_each_file("services", [&](const std::string& name, const xml::Element& root, std::uint32_t file) {
      read_service(name, root, file);
    });
    read_zones();
    for_each_file("policies", [&](const std::string& name, const xml::Element& root, std::uint32_t file) {
      read_policy(name, root, file);
    });
    read_direct();
    check_all();
    return std::move(config_);
  }

 private:
  using FileReader = std::function<void(const std::string&, const xml::Element&, std::uint32_t)>;

  // Sorted *.xml names of a directory (firewalld: sorted(os.listdir()), suffix .xml only).
  // The *.xml files of dir, by name. What cannot be read (a dangling link, a FIFO; dir itself not a
  // directory) is an error: its objects would be missing from the configuration.
  std::vector<std::string> xml_files(const fs::path& dir) {
    std::vector<std::string> names;
    std::error_code error;
    const fs::file_status dir_status = fs::status(dir, error);
    if (!fs::exists(dir_status)) return names;
    if (!fs::is_directory(dir_status)) {
      unreadable(dir, "not a directory");
      return names;
    }
    for (const auto& entry : fs::directory_iterator(dir, error)) {
      const std::string name = entry.path().filename().string();
      if (name.size() <= 4 || !name.ends_with(".xml")) continue;
      std::error_code status_error;
      const fs::file_status status = fs::status(entry.path(), status_error);
      if (fs::is_regular_file(status))
        names.push_back(name);
      else if (!fs::is_directory(status) && !name.starts_with('.'))  // .#zone.xml: an editor's lock
        unreadable(entry.path(), status_error ? status_error.message() : "not a regular file");
    }
    if (error) unreadable(dir, error.message());
    std::sort(names.begin(), names.end());
    return names;
  }

  void unreadable(const fs::path& path, const std::string& why) {
    diag_.error({diag_.add_file(path.string()), 0, 0}, "cannot read '" + path.string() + "': " + why,
                "remove it, or make it readable");
  }

  std::optional<xml::Element> parse(const fs::path& path, std::string_view root_name, const Schema& schema,
                                    std::uint32_t& file) {
    auto root = xml::parse_file(path.string(), diag_);
    file = static_cast<std::uint32_t>(diag_.files().size() - 1);
    if (!root) return std::nullopt;
    if (root->name != root_name) {
      diag_.error(root->loc,
                  "the document element is <" + root->name + ">, expected <" + std::string(root_name) + ">",
                  "a file in " + path.parent_path().filename().string() + "/ holds one <" +
                      std::string(root_name) + ">");
      return std::nullopt;
    }
    if (!check_schema(*root, schema, root_name)) return std::nullopt;
    return root;
  }

  // For a zone's binding (<interface>, <source>) written in a policy.
  static std::string binding_hint(const std::string& element) {
    return "a policy names zones: bind the " + element + " to a zone (<" + element +
           "> in zones/ZONE.xml) and name that zone in <ingress-zone> or <egress-zone>";
  }

  // Reports what firewalld's parser refuses. Elements that are unknown or lack a required attribute are
  // removed (false for e itself), so that the rest of the file is still read and its errors reported too.
  bool check_schema(xml::Element& e, const Schema& schema, std::string_view kind) {
    auto it = schema.find(e.name);
    if (it == schema.end()) {
      std::vector<std::string_view> known;
      for (const auto& [name, spec] : schema) known.push_back(name);
      std::string hint = did_you_mean(e.name, known);
      // A zone, or a zone's bindings, written in a policy, which names zones instead.
      if (kind == "policy" && e.name == "zone")
        hint = "a policy names its zones with <ingress-zone name=\"...\"/> and <egress-zone name=\"...\"/>";
      if (kind == "policy" && e.name == "interface") hint = binding_hint(e.name);
      if (hint.empty())
        hint = "remove it; firewalld refuses unknown elements in a " + std::string(kind) + " file";
      diag_.error(e.loc, "unknown element <" + e.name + "> in a " + std::string(kind), hint);
      return false;
    }
    bool complete = true;
    for (const auto& required : it->second.required) {
      if (e.has(required)) continue;
      diag_.error(e.loc, "<" + e.name + "> lacks the attribute '" + std::string(required) + "'",
                  "add " + std::string(required) + "=\"...\"");
      complete = false;
    }
    for (const auto& [key, value] : e.attributes) {
      const auto& spec = it->second;
      if (std::find(spec.required.begin(), spec.required.end(), key) == spec.required.end() &&
          std::find(spec.optional.begin(), spec.optional.end(), key) == spec.optional.end()) {
        std::vector<std::string_view> known(spec.required.begin(), spec.required.end());
        known.insert(known.end(), spec.optional.begin(), spec.optional.end());
        std::string hint = did_you_mean(key, known);
        if (hint.empty()) hint = "remove it";
        diag_.error(e.loc, "<" + e.name + "> has no attribute '" + key + "'", hint);
      }
    }
    std::erase_if(e.children, [&](xml::Element& child) { return !check_schema(child, schema, kind); });
    return complete;
  }

  void for_each_file(const std::string& subdir, const FileReader& reader) {
    const Schema* schema = nullptr;
    std::string root_name;
    if (subdir == "ipsets") schema = &ipset_schema(), root_name = "ipset";
    if (subdir == "icmptypes") schema = &icmptype_schema(), root_name = "icmptype";
    if (subdir == "helpers") schema = &helper_schema(), root_name = "helper";
    if (subdir == "services") schema = &service_schema(), root_name = "service";
    static const Schema policy_v2 = policy_schema(Compat::v2), policy_v1 = policy_schema(Compat::v1_3);
    if (subdir == "policies")
      schema = config_.compat == Compat::v2 ? &policy_v2 : &policy_v1, root_name = "policy";
    std::vector<std::string> dirs = {request_.defaults_dir};
    dirs.insert(dirs.end(), config_dirs_.begin(), config_dirs_.end());
    for (const auto& dir : dirs) {
      for (const auto& name : xml_files(fs::path(dir) / subdir)) {
        std::uint32_t file = 0;
        if (auto root = parse(fs::path(dir) / subdir / name, root_name, *schema, file))
          reader(name.substr(0, name.size() - 4), *root, file);
      }
    }
  }

  // ---- names -----------------------------------------------------------------------------------
  bool check_name(const std::string& name, std::string_view kind, std::string_view extra, std::size_t max,
                  SourceLoc loc) {
    if (is_valid_name(name, extra, max)) return true;
    std::string allowed = "letters, digits";
    for (const char c : extra) allowed += std::string(", '") + c + "'";
    diag_.error(loc, "invalid " + std::string(kind) + " name '" + name + "'",
                "rename the file: use 1.." + std::to_string(max) + " characters of " + allowed);
    return false;
  }

  // Zone and policy names may hold one '/' (combined zones), not at either end; the part before it
  // counts towards the length.
  bool check_slash_name(const std::string& name, std::string_view kind, std::size_t max, SourceLoc loc) {
    const std::size_t slash = name.find('/');
    const bool bad_slash = !name.empty() && (name.front() == '/' || name.back() == '/' ||
                                             std::count(name.begin(), name.end(), '/') > 1);
    // is_valid_name refuses the empty name; the length limit applies to the part before the '/'.
    const std::string counted = slash == std::string::npos ? name : name.substr(0, slash);
    if (bad_slash || counted.size() > max || !is_valid_name(name, "_-/", name.size() + 1)) {
      diag_.error(loc, "invalid " + std::string(kind) + " name '" + name + "'",
                  "use at most " + std::to_string(max) + " letters, digits, '_', '-'");
      return false;
    }
    return true;
  }

  // ---- firewalld.conf --------------------------------------------------------------------------
  void read_settings() {
    bool found = false;
    for (const auto& dir : config_dirs_) {
      const std::string path = (fs::path(dir) / "firewalld.conf").string();
      std::error_code error;
      const fs::file_status status = fs::status(path, error);
      if (!fs::exists(status) && fs::symlink_status(path, error).type() != fs::file_type::symlink) continue;
      if (!fs::is_regular_file(status)) {
        unreadable(path, error ? error.message() : "not a readable file");
        continue;
      }
      const std::uint32_t file = diag_.add_file(path);
      const auto text = read_source_file(path, file, diag_);
      if (!text) continue;
      config_.settings.loc = {file, 0, 0};
      found = true;
      std::set<std::string> seen;
      std::istringstream in(*text);
      std::string line;
      for (std::uint32_t number = 1; std::getline(in, line); ++number) {
        read_setting(line, {file, number, 1}, seen);
      }
    }
    // What firewalld does by itself (its preludes, its defaults) cites the firewalld.conf in force.
    if (!found) config_.settings.loc = {diag_.add_file("<firewalld's defaults: no firewalld.conf>"), 0, 0};
    const Settings& s = config_.settings;
    // 2.2+'s firewalld_conf.sanity_check: firewalld would ignore the whole file and run on its defaults.
    if (config_.compat == Compat::v2 && s.firewall_backend_text == "iptables" &&
        (s.ipv6_rpfilter_text == "loose-forward" || s.ipv6_rpfilter_text == "strict-forward"))
      diag_.error(
          s.firewall_backend_loc.value_or(s.loc),
          "IPv6_rpfilter=" + s.ipv6_rpfilter_mode +
              " is incompatible with FirewallBackend=iptables (firewalld refuses this firewalld.conf)",
          "use IPv6_rpfilter=strict or loose, or FirewallBackend=nftables");
  }

  void read_setting(std::string line, SourceLoc loc, std::set<std::string>& seen) {
    auto trim = [](std::string s) {
      const auto begin = s.find_first_not_of(" \t\r");
      if (begin == std::string::npos) return std::string();
      return s.substr(begin, s.find_last_not_of(" \t\r") - begin + 1);
    };
    line = trim(line);
    if (line.empty() || line[0] == '#' || line[0] == ';') return;
    const std::size_t eq = line.find('=');
    if (eq == std::string::npos) {
      diag_.warning(loc, "ignored line without '=': " + line, "write KEY=VALUE");
      return;
    }
    const std::string key = trim(line.substr(0, eq)), value = trim(line.substr(eq + 1));
    if (value.empty()) {
      diag_.warning(loc, key + " has no value and is ignored", "write " + key + "=VALUE");
      return;
    }
    if (!seen.insert(key).second) {
      diag_.warning(loc, key + " is set twice; firewalld keeps the first", "remove this line");
      return;
    }
    Settings& s = config_.settings;
    auto boolean = [&](bool& into) {
      const std::string v = lowered(value);
      if (v == "yes" || v == "true") {
        into = true;
      } else if (v == "no" || v == "false") {
        into = false;
      } else {
        diag_.warning(loc, key + "=" + value + " is not a boolean; the default is used", "use yes or no");
        return false;
      }
      return true;
    };
    static const std::vector<std::string_view> kNoEffect = {
        "IndividualCalls", "FlushAllOnReload", "CleanupOnExit",    "CleanupModulesOnExit",
        "Lockdown",        "MinimalMark",      "AutomaticHelpers", "AllowZoneDrifting"};
    static const std::vector<std::string_view> kNoEffect2 = {"ReloadPolicy", "NftablesFlowtable",
                                                             "NftablesCounters", "NftablesTableOwner"};
    const bool v2 = config_.compat == Compat::v2;
    if (key == "DefaultZone") {
      s.default_zone = value;
      s.default_zone_loc = loc;
    } else if (key == "LogDenied") {
      if (value == "off" || value == "all" || value == "unicast" || value == "broadcast" ||
          value == "multicast")
        s.log_denied = value;
      else
        diag_.warning(loc, "LogDenied=" + value + " is invalid; off is used",
                      "use off, all, unicast, broadcast or multicast");
    } else if (key == "IPv6_rpfilter") {
      s.ipv6_rpfilter_loc = loc;
      s.ipv6_rpfilter_text = value;
      static const std::set<std::string> kModes = {"strict", "loose", "strict-forward", "loose-forward",
                                                   "no"};
      const std::string mode = lowered(value);  // firewalld 2.x compares it lower-cased
      if (v2 && kModes.count(mode)) {
        s.ipv6_rpfilter = mode != "no";
        s.ipv6_rpfilter_mode = mode;
      } else if (boolean(s.ipv6_rpfilter)) {
        s.ipv6_rpfilter_mode = s.ipv6_rpfilter ? "strict" : "no";
      }
    } else if (key == "FirewallBackend") {
      s.firewall_backend_text = value;
      const std::string backend = lowered(value);  // firewalld compares it so; anything else is nftables
      if (backend == "iptables" || backend == "nftables") {
        s.firewall_backend = backend;
        s.firewall_backend_loc = loc;
      }
    } else if (key == "RFC3964_IPv4") {
      boolean(s.rfc3964_ipv4);
    } else if (key == "StrictForwardPorts" && v2) {
      // fw.py reads this key alone as "anything but no or false is yes" (firewalld_conf does not check
      // it); an empty value keeps the default.
      const std::string v = lowered(value);
      if (!v.empty()) s.strict_forward_ports = v != "no" && v != "false";
    } else if (std::find(kNoEffect.begin(), kNoEffect.end(), key) != kNoEffect.end() ||
               (v2 && std::find(kNoEffect2.begin(), kNoEffect2.end(), key) != kNoEffect2.end())) {
      // Accepted; no effect on which packets pass (spec §1.2).
    } else {
      std::vector<std::string_view> known(kNoEffect.begin(), kNoEffect.end());
      known.insert(known.end(),
                   {"DefaultZone", "LogDenied", "IPv6_rpfilter", "RFC3964_IPv4", "FirewallBackend"});
      if (v2) known.insert(known.end(), kNoEffect2.begin(), kNoEffect2.end());
      std::string hint = did_you_mean(key, known);
      if (hint.empty()) hint = "firewalld ignores it; remove the line";
      diag_.warning(loc, "unknown key " + key + " in firewalld.conf is ignored", hint);
    }
  }

  // ---- primitives shared by zones, policies and services -----------------------------------------
  std::optional<PortSpec> port_spec(const xml::Element& e, const std::string& port_key) {
    const std::string port = attribute(e, port_key), protocol = attribute(e, "protocol");
    auto range = parse_port_range(port);
    if (!range) {
      diag_.error(e.loc, "invalid port '" + port + "'",
                  "write N or N-M with 0 <= N < M <= 65535, or a name from /etc/services");
      return std::nullopt;
    }
    if (!is_port_protocol(protocol)) {
      diag_.error(e.loc, "invalid protocol '" + protocol + "' for a port", "use tcp, udp, sctp or dccp");
      return std::nullopt;
    }
    return PortSpec{*range, protocol, e.loc};
  }

  std::optional<ProtocolSpec> protocol_spec(const xml::Element& e, const std::string& value) {
    auto number = parse_protocol_value(value);
    if (!number) {
      diag_.error(e.loc, "unknown protocol '" + value + "'",
                  "use a number 0..255 or a name from /etc/protocols");
      return std::nullopt;
    }
    return ProtocolSpec{*number, e.loc};
  }

  void duplicate(const xml::Element& e, const std::string& what) {
    diag_.warning(e.loc, what + " is listed twice; the repetition is ignored", "remove it");
  }

  template <typename T>
  static bool contains_spec(const std::vector<T>& list, const T& item) {
    return std::any_of(list.begin(), list.end(),
                       [&](const T& x) { return x.range == item.range && x.protocol == item.protocol; });
  }

  // An element of a zone or policy body. Returns false when it is not a body element.
  bool read_body_element(const xml::Element& e, Body& body, std::string_view owner) {
    const std::string& n = e.name;
    if (n == "short" || n == "description") return true;
    if (n == "service") {
      const std::string name = attribute(e, "name");
      if (std::find(body.services.begin(), body.services.end(), name) != body.services.end()) {
        duplicate(e, "service " + name);
      } else {
        body.services.push_back(name);
        body.service_locs.push_back(e.loc);
      }
    } else if (n == "port" || n == "source-port") {
      auto& list = n == "port" ? body.ports : body.source_ports;
      if (auto spec = port_spec(e, "port")) {
        if (contains_spec(list, *spec))
          duplicate(e, n + " " + attribute(e, "port") + "/" + spec->protocol);
        else
          list.push_back(*spec);
      }
    } else if (n == "protocol") {
      if (auto spec = protocol_spec(e, attribute(e, "value"))) {
        if (std::any_of(body.protocols.begin(), body.protocols.end(),
                        [&](const ProtocolSpec& p) { return p.number == spec->number; }))
          duplicate(e, "protocol " + attribute(e, "value"));
        else
          body.protocols.push_back(*spec);
      }
    } else if (n == "icmp-block") {
      const std::string name = attribute(e, "name");
      if (std::find(body.icmp_blocks.begin(), body.icmp_blocks.end(), name) != body.icmp_blocks.end()) {
        duplicate(e, "icmp-block " + name);
      } else {
        body.icmp_blocks.push_back(name);
        body.icmp_block_locs.push_back(e.loc);
      }
    } else if (n == "masquerade") {
      body.masquerade = e.loc;
    } else if (n == "forward-port") {
      read_forward_port(e, body);
    } else if (n == "rule") {
      if (auto rule = read_rich_rule(e, lenient_, diag_)) {
        if (std::any_of(body.rules.begin(), body.rules.end(),
                        [&](const RichRule& r) { return r.text == rule->text; }))
          duplicate(e, "rule '" + rule->text + "'");
        else
          body.rules.push_back(std::move(*rule));
      }
    } else if (n == "tcp-mss-clamp" || n == "icmp-type" || n == "destination" || n == "accept" ||
               n == "reject" || n == "drop" || n == "mark" || n == "log" || n == "nflog" || n == "audit" ||
               n == "limit") {
      diag_.report(lenient_, e.loc,
                   "<" + n + "> is only allowed inside a <rule>" +
                       (lenient_ == Severity::warning ? "; firewalld 1.3 ignores it" : ""),
                   "move it into a <rule> of the " + std::string(owner));
    } else {
      return false;
    }
    return true;
  }

  void read_forward_port(const xml::Element& e, Body& body) {
    auto spec = port_spec(e, "port");
    if (!spec) return;
    ForwardPort fp;
    fp.port = spec->range;
    fp.protocol = spec->protocol;
    fp.loc = e.loc;
    const std::string to_port = attribute(e, "to-port"), to_addr = attribute(e, "to-addr");
    if (!to_port.empty()) {
      auto range = parse_port_range(to_port);
      if (!range) {
        diag_.error(e.loc, "invalid to-port '" + to_port + "'", "write N or N-M with 0 <= N < M <= 65535");
        return;
      }
      fp.to_port = *range;
    }
    if (!to_addr.empty()) {
      fp.to_addr = parse_single_address(to_addr, Family::any);
      if (!fp.to_addr) {
        diag_.error(e.loc, "to-addr '" + to_addr + "' is not an address", "write one IPv4 or IPv6 address");
        return;
      }
    }
    if (to_port.empty() && to_addr.empty()) {
      diag_.error(e.loc, "forward-port needs to-port or to-addr", "add where to forward to");
      return;
    }
    const bool seen =
        std::any_of(body.forward_ports.begin(), body.forward_ports.end(), [&](const ForwardPort& f) {
          return f.port == fp.port && f.protocol == fp.protocol && f.to_port == fp.to_port &&
                 f.to_addr == fp.to_addr;
        });
    if (seen)
      duplicate(e, "forward-port " + attribute(e, "port"));
    else
      body.forward_ports.push_back(fp);
  }

  // ---- zones -----------------------------------------------------------------------------------
  std::optional<ZoneFile> read_zone_file(const fs::path& path, const std::string& name) {
    static const Schema v2 = zone_schema(Compat::v2), v1 = zone_schema(Compat::v1_3);
    std::uint32_t file = 0;
    auto root = parse(path, "zone", config_.compat == Compat::v2 ? v2 : v1, file);
    if (!root) return std::nullopt;
    ZoneFile zf;
    Zone& z = zf.zone;
    z.name = name;
    z.file = path.string();
    z.loc = root->loc;
    if (const std::string* target = root->attribute("target")) {
      if (*target == "ACCEPT") {
        z.target = ZoneTarget::accept;
      } else if (*target == "%%REJECT%%") {
        z.target = ZoneTarget::reject;
      } else if (*target == "DROP") {
        z.target = ZoneTarget::drop;
      } else if (*target == "default") {
        z.target = ZoneTarget::explicit_default;
      } else if (*target != "{chain}_{zone}") {
        diag_.error(root->loc, "invalid zone target '" + *target + "'",
                    "use ACCEPT, %%REJECT%%, DROP or default");
      }
    }
    for (const char* key : {"ingress-priority", "egress-priority"}) {
      const std::string* text = root->attribute(key);
      if (!text) continue;
      auto value = parse_signed(*text);
      if (!value || *value < -32768 || *value > 32767) {
        diag_.error(root->loc, std::string(key) + " '" + *text + "' is invalid", "use -32768..32767");
        continue;
      }
      (std::string_view(key) == "ingress-priority" ? z.ingress_priority : z.egress_priority) =
          static_cast<std::int32_t>(*value);
    }
    for (const xml::Element& e : root->children) {
      if (read_body_element(e, z.body, "zone")) continue;
      if (e.name == "forward") {
        z.forward = true;
      } else if (e.name == "icmp-block-inversion") {
        z.icmp_block_inversion = true;
      } else if (e.name == "interface") {
        const std::string iface = attribute(e, "name");
        if (!is_valid_interface(iface)) {
          diag_.error(e.loc, "invalid interface name '" + iface + "'",
                      "use 1..16 characters without ' ', '/', '!' or '*' (a trailing '+' matches a prefix)");
        } else if (std::any_of(z.interfaces.begin(), z.interfaces.end(),
                               [&](const ZoneInterface& i) { return ir::to_string(i.pattern) == iface; })) {
          duplicate(e, "interface " + iface);
        } else {
          z.interfaces.push_back({ir::parse_iface(iface), e.loc});
        }
      } else if (e.name == "source") {
        read_zone_source(e, zf);
      }
    }
    return zf;
  }

  void read_zone_source(const xml::Element& e, ZoneFile& zf) {
    const bool has_address = e.has("address"), has_ipset = e.has("ipset");
    if (!has_address && !has_ipset) {
      // firewalld 1.3 skips <source mac=...> with a warning; 2.3 refuses it (spec §5.6 Q6).
      diag_.report(
          lenient_, e.loc, "<source> has no address and no ipset",
          e.has("mac") ? "write a MAC source as address=\"XX:XX:XX:XX:XX:XX\"" : "add address= or ipset=");
      return;
    }
    if (has_address && has_ipset) {
      diag_.report(lenient_, e.loc, "<source> has both an address and an ipset", "use two <source> elements");
      return;
    }
    if (e.has("invert")) {
      diag_.report(lenient_, e.loc, "a zone <source> cannot be inverted",
                   "remove invert=, or use a rich rule");
      return;
    }
    ZoneSource source;
    source.loc = e.loc;
    std::string key;
    if (has_address) {
      key = attribute(e, "address");
      if (auto mac = parse_mac_address(key)) {
        source.kind = ZoneSource::Kind::mac;
        source.mac = mac;
      } else if (auto cidr = parse_address(key, Family::any)) {
        source.cidr = cidr;
      } else if (has_dotted_mask(key)) {
        diag_.error(e.loc,
                    "the mask of source '" + key + "' is not contiguous, which fwengine cannot express",
                    "write the source as ADDRESS/PREFIX-LENGTH");
        return;
      } else {
        diag_.error(e.loc, "invalid source address '" + key + "'",
                    "write ADDRESS[/PREFIX] (IPv4 also ADDRESS/DOTTED.MASK) or a MAC XX:XX:XX:XX:XX:XX");
        return;
      }
    } else {
      source.kind = ZoneSource::Kind::ipset;
      source.ipset = attribute(e, "ipset");
      key = "ipset:" + source.ipset;
    }
    if (std::find(zf.source_keys.begin(), zf.source_keys.end(), key) != zf.source_keys.end()) {
      duplicate(e, "source " + key);
      return;
    }
    zf.source_keys.push_back(key);
    zf.zone.sources.push_back(std::move(source));
  }

  void read_zones() {
    std::map<std::string, ZoneFile> zones;
    std::map<std::string, std::vector<ZoneFile>> combined;  // /etc zones/<dir>/*.xml by <dir>
    auto load_dir = [&](const fs::path& dir) {
      for (const auto& file : xml_files(dir)) {
        const std::string name = file.substr(0, file.size() - 4);
        auto zf = read_zone_file(dir / file, name);
        if (zf && check_slash_name(name, "zone", max_zone_name(config_.compat), zf->zone.loc))
          zones[name] = std::move(*zf);
      }
    };
    load_dir(fs::path(request_.defaults_dir) / "zones");
    for (const auto& config_dir : config_dirs_) {
      const fs::path dir = fs::path(config_dir) / "zones";
      load_dir(dir);
      std::error_code error;
      std::vector<fs::path> subdirs;
      if (fs::is_directory(dir, error))
        for (const auto& entry : fs::directory_iterator(dir, error))
          if (entry.is_directory(error) && !entry.path().filename().string().ends_with(".xml"))
            subdirs.push_back(entry.path());
      std::sort(subdirs.begin(), subdirs.end());
      for (const auto& sub : subdirs) {
        const std::string dir_name = sub.filename().string();
        for (const auto& file : xml_files(sub)) {
          const std::string part = dir_name + "/" + file.substr(0, file.size() - 4);
          auto zf = read_zone_file(sub / file, part);
          if (zf && check_slash_name(part, "zone", max_zone_name(config_.compat), zf->zone.loc)) {
            auto& parts = combined[dir_name];
            // A later tree replaces a part of the same name.
            auto same = std::find_if(parts.begin(), parts.end(),
                                     [&](const ZoneFile& p) { return p.zone.name == part; });
            if (same != parts.end())
              *same = std::move(*zf);
            else
              parts.push_back(std::move(*zf));
          }
        }
      }
    }
    // Every zone object firewalld's permanent configuration holds, for the binding check.
    std::vector<const ZoneFile*> objects;
    for (const auto& [name, zf] : zones) objects.push_back(&zf);
    for (const auto& [name, parts] : combined)
      for (const auto& part : parts) objects.push_back(&part);
    check_bindings(objects);

    for (auto& [name, zf] : zones) config_.zones[name] = std::move(zf.zone);
    for (auto& [dir_name, parts] : combined) {
      std::sort(parts.begin(), parts.end(),
                [](const ZoneFile& a, const ZoneFile& b) { return a.zone.name < b.zone.name; });
      if (!check_slash_name(dir_name, "zone", max_zone_name(config_.compat), parts.front().zone.loc))
        continue;
      if (config_.zones.count(dir_name))
        diag_.warning(
            parts.front().zone.loc,
            "the combined zone directory " + dir_name + "/ replaces the zone file " + dir_name + ".xml",
            "keep only one of them");
      config_.zones[dir_name] = combine(dir_name, parts);
    }
  }

  // firewalld's Zone.combine: sets are unioned, flags OR-ed, rich rules concatenated; the target and
  // priorities stay the defaults.
  static Zone combine(const std::string& name, const std::vector<ZoneFile>& parts) {
    Zone z;
    z.name = name;
    z.loc = parts.front().zone.loc;
    for (const ZoneFile& part : parts) {
      const Zone& p = part.zone;
      z.file = p.file;
      for (const auto& i : p.interfaces)
        if (std::none_of(z.interfaces.begin(), z.interfaces.end(),
                         [&](const ZoneInterface& x) { return x.pattern == i.pattern; }))
          z.interfaces.push_back(i);
      for (const auto& s : p.sources)
        if (std::none_of(z.sources.begin(), z.sources.end(), [&](const ZoneSource& x) {
              return x.kind == s.kind && x.cidr == s.cidr && x.mac == s.mac && x.ipset == s.ipset;
            }))
          z.sources.push_back(s);
      for (std::size_t i = 0; i < p.body.services.size(); ++i)
        if (std::find(z.body.services.begin(), z.body.services.end(), p.body.services[i]) ==
            z.body.services.end()) {
          z.body.services.push_back(p.body.services[i]);
          z.body.service_locs.push_back(p.body.service_locs[i]);
        }
      for (const auto& port : p.body.ports)
        if (!contains_spec(z.body.ports, port)) z.body.ports.push_back(port);
      for (const auto& port : p.body.source_ports)
        if (!contains_spec(z.body.source_ports, port)) z.body.source_ports.push_back(port);
      for (const auto& proto : p.body.protocols)
        if (std::none_of(z.body.protocols.begin(), z.body.protocols.end(),
                         [&](const ProtocolSpec& x) { return x.number == proto.number; }))
          z.body.protocols.push_back(proto);
      for (std::size_t i = 0; i < p.body.icmp_blocks.size(); ++i)
        if (std::find(z.body.icmp_blocks.begin(), z.body.icmp_blocks.end(), p.body.icmp_blocks[i]) ==
            z.body.icmp_blocks.end()) {
          z.body.icmp_blocks.push_back(p.body.icmp_blocks[i]);
          z.body.icmp_block_locs.push_back(p.body.icmp_block_locs[i]);
        }
      for (const auto& fp : p.body.forward_ports)
        if (std::none_of(z.body.forward_ports.begin(), z.body.forward_ports.end(), [&](const ForwardPort& f) {
              return f.port == fp.port && f.protocol == fp.protocol && f.to_port == fp.to_port &&
                     f.to_addr == fp.to_addr;
            }))
          z.body.forward_ports.push_back(fp);
      z.body.rules.insert(z.body.rules.end(), p.body.rules.begin(), p.body.rules.end());
      z.forward = z.forward || p.forward;
      if (!z.body.masquerade) z.body.masquerade = p.body.masquerade;
      z.icmp_block_inversion = z.icmp_block_inversion || p.icmp_block_inversion;
    }
    return z;
  }

  // An interface or a source (as written) belongs to one zone object only: the parts of a combined zone
  // too, as firewalld's check compares their full names (io/zone.py _check_config, run on the permanent
  // objects, where a part is <dir>/<file>).
  void check_bindings(const std::vector<const ZoneFile*>& objects) {
    std::map<std::string, std::string> interface_owner, source_owner;
    auto conflict = [&](const std::map<std::string, std::string>::iterator& it, bool fresh,
                        const ZoneFile* zf) { return !fresh && it->second != zf->zone.name; };
    for (const ZoneFile* zf : objects) {
      for (const auto& i : zf->zone.interfaces) {
        const std::string key = ir::to_string(i.pattern);
        auto [it, fresh] = interface_owner.emplace(key, zf->zone.name);
        if (conflict(it, fresh, zf))
          diag_.error(i.loc, "interface " + key + " is already bound to zone " + it->second,
                      "bind each interface to one zone only");
      }
      for (std::size_t k = 0; k < zf->source_keys.size(); ++k) {
        auto [it, fresh] = source_owner.emplace(zf->source_keys[k], zf->zone.name);
        if (conflict(it, fresh, zf))
          diag_.error(zf->zone.sources[k].loc,
                      "source " + zf->source_keys[k] + " is already bound to zone " + it->second,
                      "bind each source to one zone only");
      }
    }
  }

  // ---- policies --------------------------------------------------------------------------------
  void read_policy(const std::string& name, const xml::Element& root, std::uint32_t file) {
    if (!check_slash_name(name, "policy", max_policy_name(config_.compat), root.loc)) return;
    Policy p;
    p.name = name;
    p.file = diag_.file_name(file);
    p.loc = root.loc;
    const std::string target = attribute(root, "target");
    if (target == "CONTINUE") {
      p.target = PolicyTarget::continue_;
    } else if (target == "ACCEPT") {
      p.target = PolicyTarget::accept;
    } else if (target == "REJECT") {
      p.target = PolicyTarget::reject;
    } else if (target == "DROP") {
      p.target = PolicyTarget::drop;
    } else {
      diag_.error(root.loc, "invalid policy target '" + target + "'", "use CONTINUE, ACCEPT, REJECT or DROP");
      return;
    }
    if (const std::string* priority = root.attribute("priority")) {
      auto value = parse_signed(*priority);
      if (!value || *value < -32768 || *value > 32767) {
        diag_.error(root.loc, "policy priority '" + *priority + "' is invalid", "use -32768..32767");
        return;
      }
      if (*value == 0 && config_.compat == Compat::v2) {
        diag_.error(root.loc, "policy priority 0 is reserved (for the zones' own rules)",
                    "use a negative priority to run before the zones, a positive one to run after them");
        return;
      }
      p.priority = static_cast<std::int32_t>(*value);
    }
    for (const xml::Element& e : root.children) {
      if (read_body_element(e, p.body, "policy")) continue;
      if (e.name == "disable") {
        p.disabled = true;
        continue;
      }
      if (e.name != "ingress-zone" && e.name != "egress-zone") {
        // Parts of a rich rule (the schema knows them) outside a <rule>.
        diag_.error(e.loc, "<" + e.name + "> outside a <rule> in a policy",
                    e.name == "source" ? binding_hint(e.name) : "put it inside a <rule>, or remove it");
        continue;
      }
      auto& zones = e.name == "ingress-zone" ? p.ingress_zones : p.egress_zones;
      const std::string zone = attribute(e, "name");
      if (std::find(zones.begin(), zones.end(), zone) != zones.end())
        duplicate(e, e.name + " " + zone);
      else
        zones.push_back(zone);
    }
    config_.policies[name] = std::move(p);
  }

  // ---- services --------------------------------------------------------------------------------
  void read_service(const std::string& name, const xml::Element& root, std::uint32_t file) {
    if (!check_name(name, "service", "_-", 1024, root.loc)) return;
    Service s;
    s.name = name;
    s.file = diag_.file_name(file);
    s.loc = root.loc;
    auto add_protocol = [&](const xml::Element& e, const std::string& value) {
      if (auto spec = protocol_spec(e, value)) {
        if (std::any_of(s.protocols.begin(), s.protocols.end(),
                        [&](const ProtocolSpec& p) { return p.number == spec->number; }))
          duplicate(e, "protocol " + value);
        else
          s.protocols.push_back(*spec);
      }
    };
    auto add_unique = [&](const xml::Element& e, std::vector<std::string>& list, const std::string& value) {
      if (std::find(list.begin(), list.end(), value) != list.end()) {
        duplicate(e, e.name + " " + value);
        return false;
      }
      list.push_back(value);
      return true;
    };
    for (const xml::Element& e : root.children) {
      if (e.name == "port" && attribute(e, "port").empty()) {
        add_protocol(e, attribute(e, "protocol"));  // legacy: port="" means the bare protocol
      } else if (e.name == "port" || e.name == "source-port") {
        auto& list = e.name == "port" ? s.ports : s.source_ports;
        if (auto spec = port_spec(e, "port")) {
          if (contains_spec(list, *spec))
            duplicate(e, e.name + " " + attribute(e, "port"));
          else
            list.push_back(*spec);
        }
      } else if (e.name == "protocol") {
        add_protocol(e, attribute(e, "value"));
      } else if (e.name == "destination") {
        for (const auto& [key, family, slot] : {std::tuple{"ipv4", Family::ipv4, &s.destination_v4},
                                                std::tuple{"ipv6", Family::ipv6, &s.destination_v6}}) {
          const std::string* text = e.attribute(key);
          if (!text) continue;
          auto cidr = parse_address(*text, family);
          if (!cidr)
            diag_.error(e.loc, "invalid " + std::string(key) + " destination '" + *text + "'",
                        "write ADDRESS[/PREFIX] of that family");
          else if (*slot)
            duplicate(e, std::string(key) + " destination");
          else
            *slot = cidr;
        }
      } else if (e.name == "include") {
        if (add_unique(e, s.includes, attribute(e, "service"))) s.include_locs.push_back(e.loc);
      } else if (e.name == "helper") {
        add_unique(e, s.helpers, attribute(e, "name"));
      } else if (e.name == "module") {
        // Deprecated: nf_conntrack_ftp means helper ftp.
        std::string module = attribute(e, "name");
        if (module.starts_with("nf_conntrack_")) {
          module = module.substr(13);
          std::replace(module.begin(), module.end(), '_', '-');
        }
        if (module.size() < 2)
          diag_.error(e.loc, "invalid module '" + attribute(e, "name") + "'", "use <helper name=\"...\"/>");
        else
          add_unique(e, s.helpers, module);
      }
    }
    config_.services[name] = std::move(s);
  }

  // ---- ipsets ----------------------------------------------------------------------------------
  void read_ipset(const std::string& name, const xml::Element& root, std::uint32_t file) {
    if (!check_name(name, "ipset", "_-:.", 1024, root.loc)) return;  // firewalld sets no length limit here
    IpSet set;
    set.name = name;
    set.file = diag_.file_name(file);
    set.loc = root.loc;
    set.type = attribute(root, "type");
    if (!kIpsetTypes.count(set.type)) {
      diag_.error(root.loc, "unsupported ipset type '" + set.type + "'",
                  "use a hash: type (hash:ip, hash:net, hash:mac, hash:ip,port, ...)");
      return;
    }
    std::set<std::string> options;
    bool timeout = false;
    std::optional<std::pair<std::int64_t, SourceLoc>> maxelem;
    std::vector<const xml::Element*> entries;
    for (const xml::Element& e : root.children) {
      if (e.name == "entry") {
        entries.push_back(&e);
        continue;
      }
      if (e.name != "option") continue;
      const std::string option = attribute(e, "name"), value = attribute(e, "value");
      if (option != "family" && option != "timeout" && option != "hashsize" && option != "maxelem") {
        diag_.error(e.loc, "unknown ipset option '" + option + "'",
                    "use family, timeout, hashsize or maxelem");
        continue;
      }
      if (value.empty()) {
        diag_.error(e.loc, "ipset option " + option + " needs a value", "add value=\"...\"");
        continue;
      }
      if (option == "family") {
        if (set.type == "hash:mac") {
          diag_.error(e.loc, "a hash:mac ipset has no family", "remove the option");
        } else if (value != "inet" && value != "inet6") {
          diag_.error(e.loc, "invalid ipset family '" + value + "'", "use inet or inet6");
        } else if (options.insert(option).second) {
          set.family = value == "inet" ? Family::ipv4 : Family::ipv6;
        }
        continue;
      }
      auto number = parse_signed(value);
      if (!number || *number < 0) {
        diag_.error(e.loc, "ipset option " + option + " must be a non-negative integer, not '" + value + "'",
                    "write a number");
        continue;
      }
      // The first timeout counts (firewalld ignores a repeated option), and firewalld compares its text:
      // any but "0" (so "00" too) hides the entries.
      if (option == "timeout" && options.insert(option).second) timeout = value != "0";
      if (option == "maxelem" && !maxelem) maxelem = std::pair{*number, e.loc};
    }
    set.has_timeout = timeout;
    if (timeout && !entries.empty()) {
      diag_.warning(entries.front()->loc, "ipset " + name + " has a timeout, so its entries are ignored",
                    "remove the timeout option or the entries");
      entries.clear();
    }
    std::set<std::string> seen;
    std::int64_t kept = 0;
    std::vector<std::size_t> entry_starts;  // where each entry's CIDRs (a range has several) start
    for (const xml::Element* e : entries) {
      entry_starts.push_back(set.addresses.size());
      kept += read_ipset_entry(*e, set, seen) ? 1 : 0;
    }
    if (maxelem && kept > maxelem->first && config_.compat == Compat::v2) {  // 2.2+ checks it
      diag_.error(maxelem->second,
                  "ipset " + name + " has " + std::to_string(kept) + " entries, more than its maxelem " +
                      std::to_string(maxelem->first),
                  "raise maxelem, or remove entries");
      return;
    }
    check_overlaps(set, entry_starts);
    config_.ipsets[name] = std::move(set);
  }

  // firewalld's nftables sets of addresses are interval sets without auto-merge, and nft refuses
  // overlapping intervals (the same one twice is fine). Its XML reader does not check for overlaps (only
  // the D-Bus calls do), so such a file loads; then 2.4+ adds the entries in batches of 1,000 and only
  // logs the failure of the batch holding an overlap (nftables.py set_restore), while 1.3.3 (and 2.0-2.3)
  // fails the whole configuration and falls back to the stock one. The 2.x mode keeps every entry.
  void check_overlaps(const IpSet& set, const std::vector<std::size_t>& entry_starts) {
    if (set.addresses.size() < 2) return;
    // Each CIDR with the entry it comes from; an entry's CIDRs ([first, next entry's first)) are adjacent.
    auto entry_of = [&](std::size_t index) {
      return static_cast<std::size_t>(std::upper_bound(entry_starts.begin(), entry_starts.end(), index) -
                                      entry_starts.begin()) -
             1;
    };
    auto cidrs_of = [&](std::size_t entry) {
      const std::size_t end =
          entry + 1 < entry_starts.size() ? entry_starts[entry + 1] : set.addresses.size();
      return std::span(set.addresses).subspan(entry_starts[entry], end - entry_starts[entry]);
    };
    std::vector<std::pair<ir::Cidr, std::size_t>> sorted;
    for (std::size_t i = 0; i < set.addresses.size(); ++i) sorted.emplace_back(set.addresses[i], entry_of(i));
    std::sort(sorted.begin(), sorted.end());
    // Sorted so, a network comes right after the widest earlier one that could hold it.
    const auto* widest = &sorted.front();
    for (std::size_t i = 1; i < sorted.size(); ++i) {
      if (!ir::contains(widest->first, sorted[i].first.addr)) {
        widest = &sorted[i];
        continue;
      }
      // The same interval twice (10.0.0.1 and 10.0.0.1/32) is no overlap to nft.
      const auto a = cidrs_of(widest->second), b = cidrs_of(sorted[i].second);
      if (std::equal(a.begin(), a.end(), b.begin(), b.end())) continue;
      const std::string overlap = "ipset " + set.name + " holds overlapping entries (" +
                                  ir::to_string(widest->first) + " and " + ir::to_string(sorted[i].first) +
                                  ")";
      const std::string hint = "remove the entries that a wider one already holds";
      if (config_.compat == Compat::v1_3)
        diag_.error(set.loc,
                    overlap + ", which firewalld 1.3.3 cannot load: it falls back to its stock configuration",
                    hint);
      else
        diag_.warning(set.loc,
                      overlap +
                          ": firewalld's nftables backend leaves out the batch of 1,000 entries that "
                          "holds them (2.4+); fwengine keeps every entry",
                      hint);
      return;
    }
  }
  // Whether the entry is kept (firewalld ignores a repeated or invalid one, with a warning).
  bool read_ipset_entry(const xml::Element& e, IpSet& set, std::set<std::string>& seen) {
    std::string text = e.text;
    std::replace(text.begin(), text.end(), '\n', ' ');
    if (!seen.insert(text).second) {
      duplicate(e, "entry " + text);
      return false;
    }
    bool kept = true;
    auto invalid = [&](const std::string& why) {
      diag_.warning(e.loc, "invalid entry '" + text + "' in ipset " + set.name + " (" + why + ") is ignored",
                    "fix or remove the entry");
      kept = false;
    };
    if (set.type == "hash:mac") {
      if (text == "00:00:00:00:00:00")
        invalid("ipset refuses 00:00:00:00:00:00");
      else if (auto mac = parse_mac_address(text))
        set.macs.push_back(*mac);
      else
        invalid("not a MAC address");
    } else if (set.type == "hash:ip" || set.type == "hash:net") {
      // As firewalld's IPSet.check_entry: FIRST-LAST ranges (hash:ip only for IPv4); no 0.0.0.0 in a
      // hash:ip and no /0 in a hash:net, which ipset refuses.
      const bool v6 = set.family == Family::ipv6;
      const std::string not_address = std::string("not an ") + (v6 ? "IPv6" : "IPv4") + " address";
      if (text.find('-') != std::string::npos && (set.type == "hash:net" || !v6)) {
        if (auto range = parse_address_range(text, set.family))
          set.addresses.insert(set.addresses.end(), range->begin(), range->end());
        else
          invalid("not a range FIRST-LAST of two " + std::string(v6 ? "IPv6" : "IPv4") +
                  " addresses, FIRST not after LAST");
      } else if (auto cidr = parse_address(text, set.family); !cidr) {
        invalid(not_address);
      } else if (set.type == "hash:ip" && text.find('/') != std::string::npos && v6) {
        invalid("hash:ip of family inet6 takes single addresses");
      } else if (set.type == "hash:ip" && !v6 && text == "0.0.0.0") {
        invalid("ipset refuses the address 0.0.0.0");
      } else if (set.type == "hash:net" && cidr->prefix == 0) {
        invalid("ipset refuses a /0 network; leave the set out to match every address");
      } else {
        set.addresses.push_back(*cidr);
      }
    } else {
      set.other_entries.push_back(text);
    }
    return kept;
  }

  // ---- icmptypes and helpers -------------------------------------------------------------------
  void read_icmptype(const std::string& name, const xml::Element& root, std::uint32_t file) {
    if (!check_name(name, "icmptype", "_-", 1024, root.loc)) return;
    IcmpType t;
    t.name = name;
    t.file = diag_.file_name(file);
    t.loc = root.loc;
    bool any_destination = false, v4 = false, v6 = false;
    for (const xml::Element& e : root.children) {
      if (e.name != "destination") continue;
      v4 = v4 || is_yes(attribute(e, "ipv4"));
      v6 = v6 || is_yes(attribute(e, "ipv6"));
      any_destination = any_destination || v4 || v6;
    }
    if (any_destination) {
      t.ipv4 = v4;
      t.ipv6 = v6;
    }
    config_.icmptypes[name] = std::move(t);
  }

  void read_helper(const std::string& name, const xml::Element& root, std::uint32_t file) {
    if (!check_name(name, "helper", "-.", 1024, root.loc)) return;
    Helper h;
    h.name = name;
    h.file = diag_.file_name(file);
    h.loc = root.loc;
    h.module = attribute(root, "module");
    if (!h.module.starts_with("nf_conntrack_") || h.module.size() <= 13) {
      diag_.error(root.loc, "helper module '" + h.module + "' must be nf_conntrack_NAME",
                  "e.g. nf_conntrack_ftp");
      return;
    }
    if (const std::string* family = root.attribute("family")) {
      if (*family == "ipv4") {
        h.family = Family::ipv4;
      } else if (*family == "ipv6") {
        h.family = Family::ipv6;
      } else if (!family->empty()) {
        diag_.error(root.loc, "invalid helper family '" + *family + "'", "use ipv4 or ipv6, or leave it out");
        return;
      }
    }
    for (const xml::Element& e : root.children)
      if (e.name == "port")
        if (auto spec = port_spec(e, "port")) h.ports.push_back(*spec);
    config_.helpers[name] = std::move(h);
  }

  // ---- direct.xml ------------------------------------------------------------------------------
  void read_direct() {
    for (const auto& dir : config_dirs_) {
      const fs::path path = fs::path(dir) / "direct.xml";
      std::error_code error;
      if (!fs::is_regular_file(path, error)) continue;
      std::uint32_t file = 0;
      auto root = parse(path, "direct", direct_schema(), file);
      if (!root) continue;
      config_.direct.clear();  // a later tree's direct.xml replaces an earlier one
      for (const xml::Element& e : root->children) {
        DirectRule rule;
        rule.loc = e.loc;
        rule.ipv = attribute(e, "ipv");
        if (rule.ipv != "ipv4" && rule.ipv != "ipv6" && rule.ipv != "eb") {
          diag_.error(e.loc, "invalid ipv '" + rule.ipv + "'", "use ipv4, ipv6 or eb");
          continue;
        }
        rule.table = attribute(e, "table");
        rule.chain = attribute(e, "chain");
        rule.args = e.text;
        if (e.name == "chain") rule.kind = DirectRule::Kind::chain;
        if (e.name == "passthrough") rule.kind = DirectRule::Kind::passthrough;
        if (e.name == "rule") {
          auto priority = parse_signed(attribute(e, "priority"));
          if (!priority || *priority < INT32_MIN || *priority > INT32_MAX) {
            diag_.error(e.loc, "invalid direct rule priority '" + attribute(e, "priority") + "'",
                        "use an integer");
            continue;
          }
          rule.priority = static_cast<std::int32_t>(*priority);
        }
        config_.direct.push_back(std::move(rule));
      }
    }
  }

  // ---- the full configuration check ------------------------------------------------------------
  void check_all() {
    for (const char* mandatory : {"block", "drop", "trusted"})
      if (!config_.zones.count(mandatory))
        diag_.error({}, std::string("zone ") + mandatory + " is missing; firewalld does not start without it",
                    "restore zones/" + std::string(mandatory) + ".xml in " + request_.defaults_dir);
    check_default_zone();
    for (const auto& [name, service] : config_.services) check_service(service);
    for (const auto& [name, zone] : config_.zones) {
      if (config_.policies.count(name))
        diag_.error(zone.loc, "zone " + name + " has the same name as a policy", "rename one of them");
      check_body(zone.body, "zone " + name, nullptr);
      for (const auto& source : zone.sources)
        if (source.kind == ZoneSource::Kind::ipset) check_source_ipset(source);
    }
    for (const auto& [name, policy] : config_.policies) {
      check_body(policy.body, "policy " + name, &policy);
      check_policy(policy);
    }
  }

  void check_default_zone() {
    Settings& s = config_.settings;
    if (config_.zones.count(s.default_zone)) return;
    for (const char* fallback : {"public", "external", "block"}) {
      if (!config_.zones.count(fallback)) continue;
      diag_.warning(s.default_zone_loc.value_or(s.loc),
                    "DefaultZone " + s.default_zone + " does not exist; firewalld uses " + fallback,
                    "set DefaultZone to an existing zone");
      s.default_zone = fallback;
      return;
    }
  }

  void check_service(const Service& service) {
    for (const auto& helper : service.helpers)
      if (!config_.helpers.count(helper))
        diag_.error(service.loc, "service " + service.name + " uses the unknown helper " + helper,
                    "add helpers/" + helper + ".xml or remove the helper");
    // Includes are expanded recursively; a cycle is harmless (firewalld keeps a visited set), an
    // unknown service anywhere below is an error.
    std::set<std::string> visited = {service.name};
    std::vector<const Service*> pending = {&service};
    while (!pending.empty()) {
      const Service* current = pending.back();
      pending.pop_back();
      for (std::size_t i = 0; i < current->includes.size(); ++i) {
        const std::string& include = current->includes[i];
        auto it = config_.services.find(include);
        if (it == config_.services.end()) {
          if (current == &service)
            // (a Service built in code may carry no locations)
            diag_.error(i < service.include_locs.size() ? service.include_locs[i] : service.loc,
                        "service " + service.name + " includes the unknown service " + include,
                        unknown_hint("service", include, config_.services));
          continue;
        }
        if (visited.insert(include).second) pending.push_back(&it->second);
      }
    }
  }

  template <typename Map>
  static std::string unknown_hint(const std::string& kind, const std::string& name, const Map& known) {
    std::vector<std::string_view> names;
    for (const auto& [key, value] : known) names.push_back(key);
    std::string hint = did_you_mean(name, names);
    return hint.empty() ? "define " + kind + " " + name + " or remove the reference" : hint;
  }

  void check_source_ipset(const ZoneSource& source) {
    auto it = config_.ipsets.find(source.ipset);
    if (it == config_.ipsets.end()) {
      diag_.error(source.loc, "unknown ipset " + source.ipset,
                  unknown_hint("ipset", source.ipset, config_.ipsets));
    } else if (!kSourceIpsetTypes.count(it->second.type)) {
      diag_.error(
          source.loc, "ipset " + source.ipset + " of type " + it->second.type + " cannot be a zone source",
          "use hash:ip, hash:net, hash:mac, hash:ip,port, hash:ip,mark, hash:net,port or hash:net,iface");
    }
  }

  void check_body(const Body& body, const std::string& owner, const Policy* policy) {
    for (std::size_t i = 0; i < body.services.size(); ++i)
      if (!config_.services.count(body.services[i]))
        diag_.error(body.service_locs[i], owner + " uses the unknown service " + body.services[i],
                    unknown_hint("service", body.services[i], config_.services));
    for (std::size_t i = 0; i < body.icmp_blocks.size(); ++i)
      if (!config_.icmptypes.count(body.icmp_blocks[i]))
        diag_.error(body.icmp_block_locs[i], owner + " blocks the unknown icmptype " + body.icmp_blocks[i],
                    unknown_hint("icmptype", body.icmp_blocks[i], config_.icmptypes));
    for (const RichRule& rule : body.rules) check_rule(rule, owner, policy);
  }

  void check_limit_speed(const std::optional<RichLimit>& limit, const RichRule& rule,
                         const std::string& owner) {
    if (!limit || limit->rate == 0 || config_.compat != Compat::v2) return;
    static const std::map<std::string, std::uint64_t> kSeconds = {
        {"second", 1}, {"minute", 60}, {"hour", 3600}, {"day", 86400}};
    auto it = kSeconds.find(limit->unit);
    if (it != kSeconds.end() && limit->rate > 10000 * it->second)
      diag_.error(
          rule.loc,
          owner + ": limit " + std::to_string(limit->rate) + "/" + limit->unit.substr(0, 1) + " is too fast",
          "firewalld 2.2+ allows at most 10000/s; remove the limit to allow every packet");
  }

  // The first of a service and the services it includes (firewalld's _rule_prepare applies each
  // included service as a rule of its own) that has a <destination>, or "".
  std::string service_with_destination(const std::string& name) {
    std::vector<std::string> pending{name}, seen;
    while (!pending.empty()) {
      const std::string next = pending.back();
      pending.pop_back();
      if (std::find(seen.begin(), seen.end(), next) != seen.end()) continue;
      seen.push_back(next);
      auto it = config_.services.find(next);
      if (it == config_.services.end()) continue;  // reported where the include is checked
      if (it->second.destination_v4 || it->second.destination_v6) return next;
      pending.insert(pending.end(), it->second.includes.rbegin(), it->second.includes.rend());
    }
    return "";
  }

  void check_rule(const RichRule& rule, const std::string& owner, const Policy* policy) {
    // 2.2+ refuses a limit faster than 10,000 a second (Rich_Limit._value_parse's integer division).
    for (const std::optional<RichLimit>* limit : {&rule.action.limit, &rule.audit})
      check_limit_speed(*limit, rule, owner);
    if (rule.log) check_limit_speed(rule.log->limit, rule, owner);
    const RichElement& e = rule.element;
    if (e.kind == RichElement::Kind::service) {
      auto it = config_.services.find(e.name);
      if (it == config_.services.end())
        diag_.error(rule.loc, owner + ": rule uses the unknown service " + e.name,
                    unknown_hint("service", e.name, config_.services));
      else if (rule.destination)
        if (const std::string with = service_with_destination(e.name); !with.empty())
          diag_.error(rule.loc, owner + ": rule has a destination and service " + with + " has one too",
                      "remove the rule's destination; the service already limits it");
    }
    if (e.kind == RichElement::Kind::icmp_block || e.kind == RichElement::Kind::icmp_type) {
      auto it = config_.icmptypes.find(e.name);
      if (it == config_.icmptypes.end()) {
        diag_.error(rule.loc, owner + ": rule uses the unknown icmptype " + e.name,
                    unknown_hint("icmptype", e.name, config_.icmptypes));
      } else if ((rule.family == Family::ipv4 && !it->second.ipv4) ||
                 (rule.family == Family::ipv6 && !it->second.ipv6)) {
        diag_.error(rule.loc, owner + ": icmptype " + e.name + " does not exist in the rule's family",
                    "change the rule family or the icmptype");
      }
    }
    for (const auto* address : {&rule.source, &rule.destination})
      if (*address && (*address)->kind == RichAddress::Kind::ipset &&
          !config_.ipsets.count((*address)->ipset))
        diag_.error(rule.loc, owner + ": rule uses the unknown ipset " + (*address)->ipset,
                    unknown_hint("ipset", (*address)->ipset, config_.ipsets));
    if (!policy) return;
    const Policy& p = *policy;
    auto has = [](const std::vector<std::string>& zones, const char* z) {
      return std::find(zones.begin(), zones.end(), z) != zones.end();
    };
    if (e.kind == RichElement::Kind::masquerade &&
        (has(p.egress_zones, "HOST") || has(p.ingress_zones, "HOST")))
      diag_.error(rule.loc, owner + ": masquerade is invalid with HOST",
                  "use masquerade in a policy between zones");
    if (e.kind == RichElement::Kind::forward_port)
      check_policy_forward_port(p, e.forward_port->to_addr.has_value(), rule.loc);
    if (rule.action.kind == RichAction::Kind::mark)
      check_egress_without_interfaces(p, "the mark action", rule.loc);
  }

  void check_egress_without_interfaces(const Policy& p, const std::string& what, SourceLoc loc) {
    for (const auto& zone : p.egress_zones) {
      auto it = config_.zones.find(zone);
      if (it != config_.zones.end() && !it->second.interfaces.empty())
        diag_.error(loc,
                    "policy " + p.name + ": " + what + " needs egress zones without interfaces, but " + zone +
                        " has some",
                    "bind " + zone + " by sources only, or use another egress zone");
    }
  }

  void check_policy_forward_port(const Policy& p, bool to_addr, SourceLoc loc) {
    const bool egress_host =
        std::find(p.egress_zones.begin(), p.egress_zones.end(), "HOST") != p.egress_zones.end();
    // 2.2 allows it (io/policy.py _check_config since "allow forward ports w/ to-addr for
    // egress-zone=HOST"): traffic for the host is DNATed elsewhere.
    if (egress_host && to_addr && config_.compat == Compat::v1_3)
      diag_.error(loc, "policy " + p.name + ": a forward-port with to-addr is invalid for egress zone HOST",
                  "remove to-addr (a local redirect) or change the egress zone");
    if (!egress_host && !p.egress_zones.empty()) {
      if (!to_addr)
        diag_.error(
            loc, "policy " + p.name + ": a forward-port needs to-addr when the egress zone is ANY or a zone",
            "add to-addr");
      if (std::find(p.egress_zones.begin(), p.egress_zones.end(), "ANY") == p.egress_zones.end())
        check_egress_without_interfaces(p, "forward-port", loc);
    }
  }

  void check_policy(const Policy& p) {
    for (const auto* side : {&p.ingress_zones, &p.egress_zones}) {
      const char* which = side == &p.ingress_zones ? "ingress" : "egress";
      const bool symbolic = std::any_of(side->begin(), side->end(),
                                        [](const std::string& z) { return z == "ANY" || z == "HOST"; });
      if (symbolic && side->size() > 1)
        diag_.error(
            p.loc,
            "policy " + p.name + ": " + which + " zones may be regular zones, or ANY alone, or HOST alone",
            "split the policy");
      for (const auto& zone : *side)
        if (zone != "ANY" && zone != "HOST" && !config_.zones.count(zone))
          diag_.error(p.loc, "policy " + p.name + " names the unknown " + which + " zone " + zone,
                      unknown_hint("zone", zone, config_.zones));
    }
    auto has = [](const std::vector<std::string>& zones, const char* z) {
      return std::find(zones.begin(), zones.end(), z) != zones.end();
    };
    if (has(p.ingress_zones, "HOST") && has(p.egress_zones, "HOST"))
      diag_.error(p.loc, "policy " + p.name + ": HOST cannot be both the ingress and the egress zone",
                  "use HOST on one side");
    if (p.body.masquerade && (has(p.egress_zones, "HOST") || has(p.ingress_zones, "HOST")))
      diag_.error(*p.body.masquerade, "policy " + p.name + ": masquerade is invalid with HOST",
                  "use masquerade in a policy between zones");
    for (const auto& fp : p.body.forward_ports) check_policy_forward_port(p, fp.to_addr.has_value(), fp.loc);
  }

  const ReadRequest& request_;
  Diagnostics& diag_;
  Severity lenient_;
  std::vector<std::string> config_dirs_;
  Config config_;
};

}  // namespace

Config read_config(const ReadRequest& request, Diagnostics& diag) {
  return Loader(request, diag).run();
}

}  // namespace fwe::firewalld
