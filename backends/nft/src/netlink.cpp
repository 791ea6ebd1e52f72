// netlink.cpp - the transaction: libnftnl objects -> one batch -> all ACKs drained -> errors mapped.
#include "netlink.hpp"

#include <arpa/inet.h>  // before linux/netfilter.h (redefinition of in_addr otherwise)
#include <fcntl.h>
#include <netinet/in.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libmnl/libmnl.h>
#include <libnftnl/batch.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/expr.h>
#include <libnftnl/gen.h>
#include <libnftnl/object.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <libnftnl/udata.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <thread>
#include <vector>

#include "fwengine/diagnostics.hpp"

namespace fwe::nft {
namespace {

template <auto Free>
struct Deleter {
  template <class T>
  void operator()(T* p) const {
    Free(p);
  }
};
using TablePtr = std::unique_ptr<nftnl_table, Deleter<nftnl_table_free>>;
using ChainPtr = std::unique_ptr<nftnl_chain, Deleter<nftnl_chain_free>>;
using SetPtr = std::unique_ptr<nftnl_set, Deleter<nftnl_set_free>>;
using RulePtr = std::unique_ptr<nftnl_rule, Deleter<nftnl_rule_free>>;
using ObjPtr = std::unique_ptr<nftnl_obj, Deleter<nftnl_obj_free>>;
using BatchPtr = std::unique_ptr<nftnl_batch, Deleter<nftnl_batch_free>>;
using UdataPtr = std::unique_ptr<nftnl_udata_buf, Deleter<nftnl_udata_buf_free>>;
using GenPtr = std::unique_ptr<nftnl_gen, Deleter<nftnl_gen_free>>;

constexpr std::uint32_t kBatchPage = 2 * 1024 * 1024;
constexpr std::uint32_t kBatchOverrun = 256 * 1024;
// The bytes of elements one message carries at most: the nest that holds them has a 16-bit length, which
// 512 elements with long comments overran (the kernel then refused the batch or read a part of it).
constexpr std::size_t kElementBytesPerMessage = 32 * 1024;
// Another program that changes the ruleset all the time (a loop of nft commands, a busy kube-proxy) can
// commit between our listing and our batch again and again: each retry waits a little longer first.
constexpr int kGenidRetries = 20;
constexpr std::size_t kAckTruesize = 2048;  // what one ACK costs in the receive buffer (skb overhead)
constexpr std::uint32_t kNftHostEndian = 1, kNftBigEndian = 2;  // nft's enum byteorder
constexpr std::size_t kRequestBuffer = 8192;                    // one small request message
constexpr std::uint32_t kConcatTypeBits = 6;                    // nft's TYPE_BITS

[[noreturn]] void fail(const std::string& what) {
  throw RuntimeError("nft: " + what + ": " + std::strerror(errno));
}

// The keepers (see Socket::keep_until_exit) whose sockets are ours no more, to be reaped.
std::vector<pid_t>& released_keepers() {
  static std::vector<pid_t> pids;
  return pids;
}

}  // namespace

class Socket {
 public:
  Socket() : nl_(mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC)) {
    if (!nl_) fail("cannot open a netlink socket");
    if (mnl_socket_bind(nl_.get(), 0, MNL_SOCKET_AUTOPID) < 0) fail("cannot bind the netlink socket");
    int on = 1;
    mnl_socket_setsockopt(nl_.get(), NETLINK_EXT_ACK, &on, sizeof on);
    timeval timeout{10, 0};  // safety net: the kernel answers every message, a hang is a bug
    setsockopt(fd(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  }
  ~Socket() {
    if (keeper_ < 0) return;
    nl_.reset();  // not the last reference: the keeper holds one until it reads the end of its pipe
    close(keeper_pipe_);
    released_keepers().push_back(keeper_);
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  // The release of any nfnetlink socket waits in the kernel until the objects that the namespace's last
  // commits replaced are freed (nf_tables flushes its destroy work, which waits for an RCU grace
  // period): 5-10 ms on an idle host, over 100 ms on a busy one. The commit is in effect by then, so
  // after the first batch a child (a shell reading a pipe only we write to) keeps a copy of the socket
  // until this one is closed or the process ends, and its release is the child's: a command that
  // committed does not wait for it as it exits. The flush holds the namespace's commit mutex, so the
  // child lets go half a second later, when the work is done and the flush holds no one's next
  // transaction. A keeper that cannot be started changes nothing.
  void keep_until_exit() {
    if (keeper_ >= 0) return;
    // Keepers of connections that ended are reaped here: a process that lives on collects no zombies.
    std::erase_if(released_keepers(), [](pid_t pid) { return waitpid(pid, nullptr, WNOHANG) != 0; });
    int pipe_ends[2];
    if (pipe2(pipe_ends, O_CLOEXEC) != 0) return;
    // The keeper's fds 0-3 are made from copies above them: a process started with a standard fd closed
    // may hold the pipe or the socket there, and an action would overwrite it before it is read.
    const int read_end = fcntl(pipe_ends[0], F_DUPFD_CLOEXEC, 4),
              socket_copy = fcntl(fd(), F_DUPFD_CLOEXEC, 4);
    close(pipe_ends[0]);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, read_end, 0);
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    posix_spawn_file_actions_adddup2(&actions, socket_copy, 3);
    posix_spawn_file_actions_addclosefrom_np(&actions, 4);
    char name[] = "fwengine-netlink-keeper", dash_c[] = "-c", script[] = "read -r _; /bin/sleep 0.5";
    char* argv[] = {name, dash_c, script, nullptr};
    char* envp[] = {nullptr};
    pid_t pid = -1;
    int failed = read_end < 0 || socket_copy < 0 ? EMFILE : ENOENT;
    for (const char* sh : {"/bin/sh", "/usr/bin/sh"})
      if (failed == ENOENT) failed = posix_spawn(&pid, sh, &actions, nullptr, argv, envp);
    posix_spawn_file_actions_destroy(&actions);
    for (int copy : {read_end, socket_copy})
      if (copy >= 0) close(copy);
    if (failed != 0) {
      close(pipe_ends[1]);
      return;
    }
    keeper_ = pid;
    keeper_pipe_ = pipe_ends[1];
  }
  int fd() const { return mnl_socket_get_fd(nl_.get()); }
  std::uint32_t portid() const { return mnl_socket_get_portid(nl_.get()); }
  mnl_socket* get() const { return nl_.get(); }
  // Big batches get one ACK per message; they must all fit while the kernel works.
  void size_buffers(std::size_t send_bytes, std::size_t replies) {
    int snd = static_cast<int>(send_bytes + 65536),
        rcv = static_cast<int>(replies * kAckTruesize + (1 << 20));
    setsockopt(fd(), SOL_SOCKET, SO_SNDBUFFORCE, &snd, sizeof snd);
    setsockopt(fd(), SOL_SOCKET, SO_RCVBUFFORCE, &rcv, sizeof rcv);
  }

 private:
  std::unique_ptr<mnl_socket, Deleter<mnl_socket_close>> nl_;
  pid_t keeper_ = -1;
  int keeper_pipe_ = -1;  // its write end: the keeper ends when this closes
};

Connection::Connection() : socket_(std::make_unique<Socket>()) {}
Connection::~Connection() = default;

namespace {

// A listing the kernel cut short because the ruleset changed under it (NLM_F_DUMP_INTR: any table's,
// another program's too): what it gave is no one state of the ruleset, so the caller lists again.
struct DumpInterrupted : RuntimeError {
  DumpInterrupted() : RuntimeError("nft: the ruleset kept changing while it was listed; try again") {}
};

// Reads what is left of an interrupted dump, so that the socket's next answer is the next request's.
void drain_dump(Socket& sock, std::vector<char>& buf, ssize_t n) {
  for (;;) {
    int left = static_cast<int>(n);
    for (auto* nlh = reinterpret_cast<const nlmsghdr*>(buf.data()); mnl_nlmsg_ok(nlh, left);
         nlh = mnl_nlmsg_next(nlh, &left))
      if (nlh->nlmsg_type == NLMSG_DONE || nlh->nlmsg_type == NLMSG_ERROR) return;
    n = mnl_socket_recvfrom(sock.get(), buf.data(), buf.size());
    if (n <= 0) return;
  }
}

// Sends one request and runs cb on each reply until the kernel says done (or acknowledges).
void request(Socket& sock, nlmsghdr* nlh, mnl_cb_t cb, void* data) {
  if (mnl_socket_sendto(sock.get(), nlh, nlh->nlmsg_len) < 0) fail("netlink send failed");
  std::vector<char> buf(1 << 16);
  for (;;) {
    ssize_t n = mnl_socket_recvfrom(sock.get(), buf.data(), buf.size());
    if (n < 0) fail("netlink receive failed");
    int ret = mnl_cb_run(buf.data(), static_cast<std::size_t>(n), nlh->nlmsg_seq, sock.portid(), cb, data);
    if (ret < 0 && errno == EINTR && (nlh->nlmsg_flags & NLM_F_DUMP)) {
      drain_dump(sock, buf, n);
      throw DumpInterrupted();
    }
    if (ret < 0) fail("kernel refused the request");
    if (ret == MNL_CB_STOP) return;
  }
}

std::uint32_t generation(Socket& sock, std::uint32_t seq) {
  char buf[kRequestBuffer];
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETGEN, AF_UNSPEC, NLM_F_ACK, seq);
  std::uint32_t genid = 0;
  request(
      sock, nlh,
      [](const nlmsghdr* reply, void* data) {
        GenPtr gen(nftnl_gen_alloc());
        if (nftnl_gen_nlmsg_parse(reply, gen.get()) == 0)
          *static_cast<std::uint32_t*>(data) = nftnl_gen_get_u32(gen.get(), NFTNL_GEN_ID);
        return MNL_CB_OK;
      },
      &genid);
  return genid;
}

std::string udata_bytes(const nftnl_udata_buf* buf) {
  return std::string(static_cast<const char*>(nftnl_udata_buf_data(buf)), nftnl_udata_buf_len(buf));
}
UdataPtr comment_buffer(std::uint8_t type, const std::string& comment) {
  UdataPtr buf(nftnl_udata_buf_alloc(NFT_USERDATA_MAXLEN));
  nftnl_udata_put_strz(buf.get(), type, comment.c_str());
  return buf;
}
std::string parse_comment(const void* data, std::uint32_t len, std::uint8_t type) {
  struct Want {
    std::uint8_t type;
    std::string text;
  } want{type, {}};
  nftnl_udata_parse(
      data, len,
      [](const nftnl_udata* attr, void* arg) {
        auto* w = static_cast<Want*>(arg);
        if (nftnl_udata_type(attr) == w->type && nftnl_udata_len(attr) > 0)
          w->text.assign(static_cast<const char*>(nftnl_udata_get(attr)), nftnl_udata_len(attr) - 1);
        return 0;
      },
      &want);
  return want.text;
}

void set_reg(nftnl_expr* e, std::uint16_t attr, std::uint32_t reg) {
  if (reg) nftnl_expr_set_u32(e, attr, reg);
}

// Chains renamed in a batch keep their old names until it commits: messages must use those.
using BatchNames = std::map<std::string, std::string>;

const std::string& batch_name(const BatchNames& names, const std::string& name) {
  auto it = names.find(name);
  return it == names.end() ? name : it->second;
}

nftnl_expr* build_expr(const Expr& x, const std::vector<std::uint32_t>& anon_ids, const BatchNames& names) {
  auto make = [](const char* name) { return nftnl_expr_alloc(name); };
  nftnl_expr* e = nullptr;
  switch (x.kind) {
    case Expr::Kind::meta_load:
      e = make("meta");
      nftnl_expr_set_u32(e, NFTNL_EXPR_META_KEY, x.key);
      nftnl_expr_set_u32(e, NFTNL_EXPR_META_DREG, x.dreg);
      break;
    case Expr::Kind::meta_set:
      e = make("meta");
      nftnl_expr_set_u32(e, NFTNL_EXPR_META_KEY, x.key);
      nftnl_expr_set_u32(e, NFTNL_EXPR_META_SREG, NFT_REG_1);
      break;
    case Expr::Kind::ct_load:
      e = make("ct");
      nftnl_expr_set_u32(e, NFTNL_EXPR_CT_KEY, x.key);
      nftnl_expr_set_u32(e, NFTNL_EXPR_CT_DREG, NFT_REG_1);
      if (x.ct_dir >= 0) nftnl_expr_set_u8(e, NFTNL_EXPR_CT_DIR, static_cast<std::uint8_t>(x.ct_dir));
      break;
    case Expr::Kind::payload:
      e = make("payload");
      nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_BASE, x.key);
      nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_OFFSET, x.offset);
      nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_LEN, x.len);
      nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_DREG, x.dreg);
      break;
    case Expr::Kind::cmp:
      e = make("cmp");
      nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_SREG, NFT_REG_1);
      nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_OP, x.key);
      nftnl_expr_set(e, NFTNL_EXPR_CMP_DATA, x.data.data(), static_cast<std::uint32_t>(x.data.size()));
      break;
    case Expr::Kind::range:
      e = make("range");
      nftnl_expr_set_u32(e, NFTNL_EXPR_RANGE_SREG, NFT_REG_1);
      nftnl_expr_set_u32(e, NFTNL_EXPR_RANGE_OP, x.key);
      nftnl_expr_set(e, NFTNL_EXPR_RANGE_FROM_DATA, x.data.data(), static_cast<std::uint32_t>(x.data.size()));
      nftnl_expr_set(e, NFTNL_EXPR_RANGE_TO_DATA, x.data_to.data(),
                     static_cast<std::uint32_t>(x.data_to.size()));
      break;
    case Expr::Kind::bitwise:
      e = make("bitwise");
      nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_SREG, x.dreg);
      nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_DREG, x.dreg);
      nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_LEN, x.len);
      nftnl_expr_set(e, NFTNL_EXPR_BITWISE_MASK, x.data.data(), static_cast<std::uint32_t>(x.data.size()));
      nftnl_expr_set(e, NFTNL_EXPR_BITWISE_XOR, x.data_to.data(),
                     static_cast<std::uint32_t>(x.data_to.size()));
      break;
    case Expr::Kind::lookup:
      e = make("lookup");
      nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_SREG, NFT_REG_1);
      nftnl_expr_set_str(e, NFTNL_EXPR_LOOKUP_SET, x.text.c_str());
      if (x.text == "__set%d") nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_SET_ID, anon_ids.at(x.set_id));
      if (x.invert) nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);
      if (x.dreg == NFT_REG_VERDICT) nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_DREG, NFT_REG_VERDICT);
      break;
    case Expr::Kind::immediate:
      e = make("immediate");
      nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, x.dreg);
      nftnl_expr_set(e, NFTNL_EXPR_IMM_DATA, x.data.data(), static_cast<std::uint32_t>(x.data.size()));
      break;
    case Expr::Kind::verdict:
      e = make("immediate");
      nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT);
      nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_VERDICT, x.key);
      if (!x.text.empty()) nftnl_expr_set_str(e, NFTNL_EXPR_IMM_CHAIN, batch_name(names, x.text).c_str());
      break;
    case Expr::Kind::counter:
      e = make("counter");
      break;
    case Expr::Kind::limit:
      e = make("limit");
      nftnl_expr_set_u64(e, NFTNL_EXPR_LIMIT_RATE, x.rate);
      nftnl_expr_set_u64(e, NFTNL_EXPR_LIMIT_UNIT, x.unit);
      nftnl_expr_set_u32(e, NFTNL_EXPR_LIMIT_BURST, x.burst);
      nftnl_expr_set_u32(e, NFTNL_EXPR_LIMIT_TYPE, NFT_LIMIT_PKTS);
      nftnl_expr_set_u32(e, NFTNL_EXPR_LIMIT_FLAGS, 0);
      break;
    case Expr::Kind::log:
      e = make("log");
      if (!x.text.empty()) nftnl_expr_set_str(e, NFTNL_EXPR_LOG_PREFIX, x.text.c_str());
      if (x.has_level) nftnl_expr_set_u32(e, NFTNL_EXPR_LOG_LEVEL, x.level);
      break;
    case Expr::Kind::reject:
      e = make("reject");
      nftnl_expr_set_u32(e, NFTNL_EXPR_REJECT_TYPE, x.key);
      nftnl_expr_set_u8(e, NFTNL_EXPR_REJECT_CODE, static_cast<std::uint8_t>(x.code));
      break;
    case Expr::Kind::nat:
      e = make("nat");
      nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_TYPE, x.key);
      nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_FAMILY, x.family);
      set_reg(e, NFTNL_EXPR_NAT_REG_ADDR_MIN, x.reg_addr);
      set_reg(e, NFTNL_EXPR_NAT_REG_PROTO_MIN, x.reg_proto_min);
      set_reg(e, NFTNL_EXPR_NAT_REG_PROTO_MAX, x.reg_proto_max);
      if (x.code) nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_FLAGS, x.code);
      break;
    case Expr::Kind::redir:
      e = make("redir");
      set_reg(e, NFTNL_EXPR_REDIR_REG_PROTO_MIN, x.reg_proto_min);
      set_reg(e, NFTNL_EXPR_REDIR_REG_PROTO_MAX, x.reg_proto_max);
      if (x.code) nftnl_expr_set_u32(e, NFTNL_EXPR_REDIR_FLAGS, x.code);
      break;
    case Expr::Kind::masq:
      e = make("masq");
      set_reg(e, NFTNL_EXPR_MASQ_REG_PROTO_MIN, x.reg_proto_min);
      set_reg(e, NFTNL_EXPR_MASQ_REG_PROTO_MAX, x.reg_proto_max);
      if (x.code) nftnl_expr_set_u32(e, NFTNL_EXPR_MASQ_FLAGS, x.code);
      break;
    case Expr::Kind::notrack:
      e = make("notrack");
      break;
    case Expr::Kind::rt_load:
      e = make("rt");
      nftnl_expr_set_u32(e, NFTNL_EXPR_RT_KEY, x.key);
      nftnl_expr_set_u32(e, NFTNL_EXPR_RT_DREG, NFT_REG_1);
      break;
    case Expr::Kind::byteorder:
      e = make("byteorder");
      nftnl_expr_set_u32(e, NFTNL_EXPR_BYTEORDER_SREG, NFT_REG_1);
      nftnl_expr_set_u32(e, NFTNL_EXPR_BYTEORDER_DREG, NFT_REG_1);
      nftnl_expr_set_u32(e, NFTNL_EXPR_BYTEORDER_OP, NFT_BYTEORDER_HTON);
      nftnl_expr_set_u32(e, NFTNL_EXPR_BYTEORDER_LEN, x.len);
      nftnl_expr_set_u32(e, NFTNL_EXPR_BYTEORDER_SIZE, x.offset);
      break;
    case Expr::Kind::exthdr_write:
      e = make("exthdr");
      nftnl_expr_set_u32(e, NFTNL_EXPR_EXTHDR_SREG, NFT_REG_1);
      nftnl_expr_set_u32(e, NFTNL_EXPR_EXTHDR_OP, NFT_EXTHDR_OP_TCPOPT);
      nftnl_expr_set_u8(e, NFTNL_EXPR_EXTHDR_TYPE, static_cast<std::uint8_t>(x.key));
      nftnl_expr_set_u32(e, NFTNL_EXPR_EXTHDR_OFFSET, x.offset);
      nftnl_expr_set_u32(e, NFTNL_EXPR_EXTHDR_LEN, x.len);
      break;
    case Expr::Kind::objref:
      e = make("objref");
      nftnl_expr_set_u32(e, NFTNL_EXPR_OBJREF_IMM_TYPE, x.key);
      nftnl_expr_set_str(e, NFTNL_EXPR_OBJREF_IMM_NAME, x.text.c_str());
      break;
    case Expr::Kind::fib:
      e = make("fib");
      nftnl_expr_set_u32(e, NFTNL_EXPR_FIB_DREG, NFT_REG_1);
      nftnl_expr_set_u32(e, NFTNL_EXPR_FIB_RESULT, x.key);
      nftnl_expr_set_u32(e, NFTNL_EXPR_FIB_FLAGS, x.code);
      break;
  }
  return e;
}

// The kernel's name of an expression; a switch, so that a new kind cannot be left out (-Wswitch).
const char* kind_name(Expr::Kind kind) {
  switch (kind) {
    case Expr::Kind::meta_load:
    case Expr::Kind::meta_set:
      return "meta";
    case Expr::Kind::ct_load:
      return "ct";
    case Expr::Kind::payload:
      return "payload";
    case Expr::Kind::cmp:
      return "cmp";
    case Expr::Kind::range:
      return "range";
    case Expr::Kind::bitwise:
      return "bitwise";
    case Expr::Kind::lookup:
      return "lookup";
    case Expr::Kind::immediate:
    case Expr::Kind::verdict:
      return "immediate";
    case Expr::Kind::counter:
      return "counter";
    case Expr::Kind::limit:
      return "limit";
    case Expr::Kind::log:
      return "log";
    case Expr::Kind::reject:
      return "reject";
    case Expr::Kind::nat:
      return "nat";
    case Expr::Kind::redir:
      return "redir";
    case Expr::Kind::masq:
      return "masq";
    case Expr::Kind::notrack:
      return "notrack";
    case Expr::Kind::rt_load:
      return "rt";
    case Expr::Kind::byteorder:
      return "byteorder";
    case Expr::Kind::exthdr_write:
      return "exthdr";
    case Expr::Kind::fib:
      return "fib";
    case Expr::Kind::objref:
      return "objref";
  }
  return "?";
}

RulePtr build_rule(const Rule& rule, const std::string& chain, const std::vector<std::uint32_t>& anon_ids,
                   const BatchNames& names = {}) {
  RulePtr r(nftnl_rule_alloc());
  nftnl_rule_set_u32(r.get(), NFTNL_RULE_FAMILY, NFPROTO_INET);
  nftnl_rule_set_str(r.get(), NFTNL_RULE_TABLE, kTableName);
  nftnl_rule_set_str(r.get(), NFTNL_RULE_CHAIN, batch_name(names, chain).c_str());
  for (const auto& x : rule.exprs) nftnl_rule_add_expr(r.get(), build_expr(x, anon_ids, names));
  if (!rule.comment.empty()) {
    UdataPtr udata = comment_buffer(NFTNL_UDATA_RULE_COMMENT, rule.comment);
    std::string bytes = udata_bytes(udata.get());
    nftnl_rule_set_data(r.get(), NFTNL_RULE_USERDATA, bytes.data(), static_cast<std::uint32_t>(bytes.size()));
  }
  return r;
}

SetPtr build_set(const Set& set, std::uint32_t id) {
  SetPtr s(nftnl_set_alloc());
  nftnl_set_set_u32(s.get(), NFTNL_SET_FAMILY, NFPROTO_INET);
  nftnl_set_set_str(s.get(), NFTNL_SET_TABLE, kTableName);
  nftnl_set_set_str(s.get(), NFTNL_SET_NAME, set.name.c_str());
  nftnl_set_set_u32(s.get(), NFTNL_SET_ID, id);
  std::uint32_t key_type = static_cast<std::uint32_t>(set.key_type), key_len = set.key_len;
  if (!set.concat.empty()) {  // nft's concatenated type: the fields' ids, 6 bits each, first field highest
    key_type = key_len = 0;
    std::vector<std::uint8_t> lens;
    for (KeyType field : set.concat) {
      key_type = key_type << kConcatTypeBits | static_cast<std::uint32_t>(field);
      lens.push_back(static_cast<std::uint8_t>(key_length(field)));
      key_len += (key_length(field) + 3) / 4 * 4;  // every field fills whole 32-bit registers
    }
    if (set.interval) nftnl_set_set_data(s.get(), NFTNL_SET_DESC_CONCAT, lens.data(), lens.size());
  }
  nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_TYPE, key_type);
  nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_LEN, key_len);
  std::uint32_t flags =
      (set.interval ? static_cast<std::uint32_t>(NFT_SET_INTERVAL) : 0u) |
      (set.interval && !set.concat.empty() ? static_cast<std::uint32_t>(NFT_SET_CONCAT) : 0u) |
      (set.anonymous ? static_cast<std::uint32_t>(NFT_SET_ANONYMOUS | NFT_SET_CONSTANT) : 0u) |
      (set.goto_chains.empty() ? 0u : static_cast<std::uint32_t>(NFT_SET_MAP));
  nftnl_set_set_u32(s.get(), NFTNL_SET_FLAGS, flags);
  if (!set.goto_chains.empty()) nftnl_set_set_u32(s.get(), NFTNL_SET_DATA_TYPE, NFT_DATA_VERDICT);
  if (set.anonymous)
    nftnl_set_set_u32(s.get(), NFTNL_SET_DESC_SIZE, static_cast<std::uint32_t>(set.elements.size()));
  else if (set.size)
    nftnl_set_set_u32(s.get(), NFTNL_SET_DESC_SIZE, set.size);
  if (set.counters) nftnl_set_add_expr(s.get(), nftnl_expr_alloc("counter"));  // cloned into each element
  // nft reads the key byte order from here to print elements; interface names are host-order strings,
  // a concatenation has none of its own.
  UdataPtr udata(nftnl_udata_buf_alloc(NFT_USERDATA_MAXLEN));
  nftnl_udata_put_u32(udata.get(), NFTNL_UDATA_SET_KEYBYTEORDER,
                      !set.concat.empty()               ? 0u
                      : set.key_type == KeyType::ifname ? kNftHostEndian
                                                        : kNftBigEndian);
  if (!set.comment.empty()) nftnl_udata_put_strz(udata.get(), NFTNL_UDATA_SET_COMMENT, set.comment.c_str());
  std::string bytes = udata_bytes(udata.get());
  nftnl_set_set_data(s.get(), NFTNL_SET_USERDATA, bytes.data(), static_cast<std::uint32_t>(bytes.size()));
  return s;
}

// A name without its content digest: what stays the same when a set or chain changes.
std::string_view stable_part(std::string_view name) {
  auto dot = name.rfind('.');
  return dot == std::string_view::npos ? name : name.substr(0, dot);
}

// One batch under construction; remembers which object each sequence number carries.
class Transaction {
 public:
  Transaction(std::uint32_t first_seq, std::uint32_t genid)
      : batch_(nftnl_batch_alloc(kBatchPage, kBatchOverrun)),
        begin_seq_(first_seq),
        seq_(first_seq),
        genid_(genid) {
    nlmsghdr* nlh = nftnl_batch_begin(static_cast<char*>(nftnl_batch_buffer(batch_.get())), seq_++);
    mnl_attr_put_u32(nlh, NFNL_BATCH_GENID, htonl(genid));
    next();
  }

  // what: the message's object, for an error; stamp (when not empty): the origin it was made for.
  nlmsghdr* message(std::uint16_t type, std::uint16_t flags, std::string what,
                    const std::string* stamp = nullptr) {
    what_[seq_] = {std::move(what), stamp};
    return nftnl_nlmsg_build_hdr(static_cast<char*>(nftnl_batch_buffer(batch_.get())), type, NFPROTO_INET,
                                 flags | NLM_F_ACK, seq_++);
  }
  void next() {
    if (nftnl_batch_update(batch_.get()) < 0) fail("cannot grow the netlink batch");
  }

  void table(std::uint16_t type, std::uint16_t flags) {
    TablePtr t(nftnl_table_alloc());
    nftnl_table_set_u32(t.get(), NFTNL_TABLE_FAMILY, NFPROTO_INET);
    nftnl_table_set_str(t.get(), NFTNL_TABLE_NAME, kTableName);
    nftnl_table_nlmsg_build_payload(message(type, flags, std::string("table inet ") + kTableName), t.get());
    next();
  }

  // Deletes every rule of a chain (a DELRULE without handle).
  void flush_chain(const std::string& name) {
    RulePtr r(nftnl_rule_alloc());
    nftnl_rule_set_u32(r.get(), NFTNL_RULE_FAMILY, NFPROTO_INET);
    nftnl_rule_set_str(r.get(), NFTNL_RULE_TABLE, kTableName);
    nftnl_rule_set_str(r.get(), NFTNL_RULE_CHAIN, batch_name(batch_names_, name).c_str());
    nftnl_rule_nlmsg_build_payload(message(NFT_MSG_DELRULE, 0, "flush of chain " + name), r.get());
    next();
  }

  // The chain keeps its rules and everything that jumps to it; until the commit it has its old name.
  void rename_chain(std::uint64_t handle, const std::string& old_name, const std::string& new_name) {
    ChainPtr c(nftnl_chain_alloc());
    nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_FAMILY, NFPROTO_INET);
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TABLE, kTableName);
    nftnl_chain_set_u64(c.get(), NFTNL_CHAIN_HANDLE, handle);
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_NAME, new_name.c_str());
    nftnl_chain_nlmsg_build_payload(
        message(NFT_MSG_NEWCHAIN, 0, "renaming chain " + old_name + " to " + new_name), c.get());
    next();
    batch_names_[new_name] = old_name;
  }

  void delete_chain(const std::string& name) {
    ChainPtr c(nftnl_chain_alloc());
    nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_FAMILY, NFPROTO_INET);
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TABLE, kTableName);
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_NAME, name.c_str());
    nftnl_chain_nlmsg_build_payload(message(NFT_MSG_DELCHAIN, 0, "deletion of chain " + name), c.get());
    next();
  }

  // Without NLM_F_EXCL: adding a helper object the table has already is no error and changes nothing.
  void helper(const CtHelper& helper) {
    ObjPtr o(nftnl_obj_alloc());
    nftnl_obj_set_u32(o.get(), NFTNL_OBJ_FAMILY, NFPROTO_INET);
    nftnl_obj_set_str(o.get(), NFTNL_OBJ_TABLE, kTableName);
    nftnl_obj_set_str(o.get(), NFTNL_OBJ_NAME, helper.name.c_str());
    nftnl_obj_set_u32(o.get(), NFTNL_OBJ_TYPE, NFT_OBJECT_CT_HELPER);
    nftnl_obj_set_str(o.get(), NFTNL_OBJ_CT_HELPER_NAME, helper.type.c_str());
    nftnl_obj_set_u16(o.get(), NFTNL_OBJ_CT_HELPER_L3PROTO, NFPROTO_INET);
    nftnl_obj_set_u8(o.get(), NFTNL_OBJ_CT_HELPER_L4PROTO, helper.l4proto);
    nftnl_obj_nlmsg_build_payload(message(NFT_MSG_NEWOBJ, NLM_F_CREATE, "ct helper " + helper.name), o.get());
    next();
  }

  void delete_set(const std::string& name) {
    SetPtr s(nftnl_set_alloc());
    nftnl_set_set_u32(s.get(), NFTNL_SET_FAMILY, NFPROTO_INET);
    nftnl_set_set_str(s.get(), NFTNL_SET_TABLE, kTableName);
    nftnl_set_set_str(s.get(), NFTNL_SET_NAME, name.c_str());
    nftnl_set_nlmsg_build_payload(message(NFT_MSG_DELSET, 0, "deletion of set " + name), s.get());
    next();
  }

  void set(const Set& set, std::uint32_t id, const std::string& what, const std::string* stamp = nullptr) {
    SetPtr s = build_set(set, id);
    nftnl_set_nlmsg_build_payload(message(NFT_MSG_NEWSET, NLM_F_CREATE, what, stamp), s.get());
    next();
    std::vector<const Element*> all;  // in messages small enough for the element list nest
    all.reserve(set.elements.size());
    for (const auto& element : set.elements) all.push_back(&element);
    elements(NFT_MSG_NEWSETELEM, set, id, all, "elements of " + what, Kept::lasting, stamp);
  }

  // An element delta of a set the kernel has: deletions and additions, in that order.
  void patch(const Set& set, const SetDelta& delta) {
    std::vector<const Element*> removed;
    for (const auto& element : delta.removed) removed.push_back(&element);
    elements(NFT_MSG_DELSETELEM, set, 0, removed, "deletion of elements of set " + set.name, Kept::copied);
    elements(NFT_MSG_NEWSETELEM, set, 0, delta.added, "elements of set " + set.name);
  }

  // The bytes an element's attributes take in a message, at most: its nest; key and key end, each a
  // value in a nest; flags; a verdict (a code and a chain name, in two nests); the comment (a type,
  // a length and the text with its NUL). Each attribute is padded to 4 bytes.
  static std::size_t element_bytes(const Element& element, const std::string* chain) {
    auto attribute = [](std::size_t payload) { return 4 + ((payload + 3) & ~std::size_t{3}); };
    std::size_t bytes = 4 + attribute(attribute(element.key.size()));
    if (!element.key_end.empty()) bytes += attribute(attribute(element.key_end.size()));
    if (element.interval_end) bytes += attribute(4);
    if (chain) bytes += attribute(attribute(attribute(4) + attribute(chain->size() + 1)));
    if (!element.comment.empty()) bytes += attribute(2 + element.comment.size() + 1);
    return bytes;
  }

  // Whether the listed elements outlive the batch's answers (the table's) or must be copied for them.
  enum class Kept { lasting, copied };
  void elements(std::uint16_t type, const Set& set, std::uint32_t id, const std::vector<const Element*>& list,
                const std::string& what, Kept kept = Kept::lasting, const std::string* stamp = nullptr) {
    // A verdict map is anonymous: it is sent whole, with its rule, in the order of its elements.
    if (!set.goto_chains.empty() && list.size() != set.goto_chains.size())
      fail("a verdict map must be sent whole: " + what);
    for (std::size_t first = 0, end = 0; first < list.size(); first = end) {
      SetPtr chunk = build_set(set, id);
      for (std::size_t bytes = 0; end < list.size(); ++end) {
        const Element& element = *list[end];
        const std::string* chain =
            set.goto_chains.empty() ? nullptr : &batch_name(batch_names_, set.goto_chains[end]);
        bytes += element_bytes(element, chain);
        if (end > first && bytes > kElementBytesPerMessage) break;
        nftnl_set_elem* e = nftnl_set_elem_alloc();
        nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, element.key.data(),
                           static_cast<std::uint32_t>(element.key.size()));
        if (!element.key_end.empty())
          nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY_END, element.key_end.data(),
                             static_cast<std::uint32_t>(element.key_end.size()));
        if (element.interval_end) nftnl_set_elem_set_u32(e, NFTNL_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
        if (chain) {
          nftnl_set_elem_set_u32(e, NFTNL_SET_ELEM_VERDICT, static_cast<std::uint32_t>(NFT_GOTO));
          nftnl_set_elem_set_str(e, NFTNL_SET_ELEM_CHAIN, chain->c_str());
        }
        if (!element.comment.empty()) {
          UdataPtr udata = comment_buffer(NFTNL_UDATA_SET_ELEM_COMMENT, element.comment);
          std::string bytes = udata_bytes(udata.get());
          nftnl_set_elem_set(e, NFTNL_SET_ELEM_USERDATA, bytes.data(),
                             static_cast<std::uint32_t>(bytes.size()));
        }
        nftnl_set_elem_add(chunk.get(), e);
      }
      const std::uint32_t seq = seq_;
      nlmsghdr* nlh = message(type, type == NFT_MSG_NEWSETELEM ? NLM_F_CREATE : 0, what, stamp);
      nftnl_set_elems_nlmsg_build_payload(nlh, chunk.get());
      SentElements& sent = sent_elements_[seq];
      sent.nlh = nlh;
      sent.set = &set;
      for (auto it = list.begin() + static_cast<std::ptrdiff_t>(first);
           it != list.begin() + static_cast<std::ptrdiff_t>(end); ++it)
        if (kept == Kept::copied)
          sent.copies.push_back(**it);
        else
          sent.elements.push_back(*it);
      for (const auto& copy : sent.copies) sent.elements.push_back(&copy);
      next();
    }
  }

  void chain(const Chain& chain) {
    ChainPtr c(nftnl_chain_alloc());
    nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_FAMILY, NFPROTO_INET);
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TABLE, kTableName);
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_NAME, chain.name.c_str());
    if (chain.hook) {
      nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_HOOKNUM, chain.hook->hooknum);
      nftnl_chain_set_s32(c.get(), NFTNL_CHAIN_PRIO, chain.hook->priority);
      nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TYPE, chain.hook->type.c_str());
      nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_POLICY, NF_ACCEPT);
    }
    nftnl_chain_nlmsg_build_payload(message(NFT_MSG_NEWCHAIN, NLM_F_CREATE, "chain " + chain.name), c.get());
    next();
  }

  void rule(const Rule& rule, const std::string& chain, std::size_t index) {
    std::vector<std::uint32_t> anon_ids;
    for (const auto& set : rule.anon_sets) {
      anon_ids.push_back(next_set_id_++);
      this->set(set, anon_ids.back(),
                "anonymous set of rule #" + std::to_string(index) + " in chain " + chain, &rule.comment);
    }
    RulePtr r = build_rule(rule, chain, anon_ids, batch_names_);
    std::uint32_t seq = seq_;
    nlmsghdr* nlh = message(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND,
                            "rule #" + std::to_string(index) + " in chain " + chain, &rule.comment);
    nftnl_rule_nlmsg_build_payload(nlh, r.get());
    sent_rules_[seq] = {&rule, expression_offsets(nlh)};
    next();
  }

  std::uint32_t named_set_id() { return next_set_id_++; }
  // Where errors find the first lines of the policies that relative stamps count from.
  void explain_stamps_with(const Table& table) {
    for (const auto& set : table.sets)
      if (stable_part(set.name) == kPositionsSet) where_ = &set;
  }
  // The ruleset's generation when the batch was begun: what a fill may compare with.
  std::uint32_t generation() const { return genid_; }
  bool empty() const { return what_.empty(); }

  // Sends the batch and drains every reply. Returns false when the generation changed (retry).
  bool commit(Socket& sock) {
    // Nothing to change: an empty batch would only get an answer nobody reads when the generation moved.
    if (empty()) return true;
    nftnl_batch_end(static_cast<char*>(nftnl_batch_buffer(batch_.get())), seq_);
    next();
    std::vector<iovec> iov(static_cast<std::size_t>(nftnl_batch_iovec_len(batch_.get())));
    nftnl_batch_iovec(batch_.get(), iov.data(), static_cast<std::uint32_t>(iov.size()));
    sock.size_buffers(nftnl_batch_buffer_len(batch_.get()) + iov.size() * kBatchPage, what_.size());
    sockaddr_nl kernel{};
    kernel.nl_family = AF_NETLINK;
    msghdr msg{};
    msg.msg_name = &kernel;
    msg.msg_namelen = sizeof kernel;
    msg.msg_iov = iov.data();
    msg.msg_iovlen = iov.size();
    if (sendmsg(sock.fd(), &msg, 0) < 0) fail("cannot send the netlink batch");

    Replies replies{this, {}, what_.size(), false};
    std::vector<char> buf(1 << 20);
    while (replies.pending > 0 && !replies.restart) {
      ssize_t n = mnl_socket_recvfrom(sock.get(), buf.data(), buf.size());
      if (n < 0 && !replies.errors.empty()) break;  // refused: report what we have, not the silence
      if (n < 0) fail("no answer from the kernel for the netlink batch");
      for (const char* p = buf.data(); p < buf.data() + n;) {
        const auto* nlh = reinterpret_cast<const nlmsghdr*>(p);
        if (!NLMSG_OK(nlh, static_cast<unsigned>(buf.data() + n - p))) break;
        if (nlh->nlmsg_type == NLMSG_ERROR) replies.take(nlh);
        p += NLMSG_ALIGN(nlh->nlmsg_len);
      }
    }
    sock.keep_until_exit();
    if (replies.restart) return false;
    if (!replies.errors.empty()) {
      std::string text = "nft: the kernel refused the transaction, nothing was applied:";
      for (const auto& e : replies.errors) text += "\n  " + e;
      throw RuntimeError(text);
    }
    return true;
  }

 private:
  struct Replies {
    Transaction* tx;
    std::vector<std::string> errors;
    std::size_t pending;
    bool restart;

    void take(const nlmsghdr* nlh) {
      const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
      if (err->msg.nlmsg_seq == tx->begin_seq_) {  // refused before any message: generation changed
        if (-err->error == ERESTART) {
          restart = true;
          return;
        }
        errors.push_back(std::string("batch: ") + std::strerror(-err->error));
        pending = 0;
        return;
      }
      if (pending > 0) --pending;
      if (err->error == 0) return;
      std::string text = tx->describe(err->msg.nlmsg_seq) + ": " + std::strerror(-err->error);
      ExtAck ack = extended_ack(nlh, err);
      std::string detail = ack.message;
      if (auto rule = tx->sent_rules_.find(err->msg.nlmsg_seq); rule != tx->sent_rules_.end()) {
        const auto& offsets = rule->second.expression_offsets;
        std::size_t k = 0;
        while (ack.offset && k + 1 < offsets.size() && offsets[k + 1] <= ack.offset) ++k;
        if (ack.offset && !offsets.empty() && offsets[0] <= ack.offset)
          detail += (detail.empty() ? "" : ", ") + std::string("at expression #") + std::to_string(k + 1) +
                    " '" + kind_name(rule->second.rule->exprs.at(k).kind) + "'";
        detail += (detail.empty() ? "" : ", ") + std::string("in: ") + rule->second.rule->text();
      } else if (auto sent = tx->sent_elements_.find(err->msg.nlmsg_seq);
                 ack.offset && sent != tx->sent_elements_.end()) {
        detail += (detail.empty() ? "" : ", ") + sent->second.refused(ack.offset, *tx);
      } else if (ack.offset) {
        detail += (detail.empty() ? "" : ", ") + std::string("at byte ") + std::to_string(ack.offset);
      }
      if (!detail.empty()) text += " (" + detail + ")";
      errors.push_back(text);
    }
  };

  // NLMSGERR_ATTR_MSG and NLMSGERR_ATTR_OFFS after the (possibly capped) echo of our message.
  struct ExtAck {
    std::string message;
    std::uint32_t offset = 0;  // from the start of our message
  };
  static ExtAck extended_ack(const nlmsghdr* nlh, const nlmsgerr* err) {
    ExtAck found;
    if (!(nlh->nlmsg_flags & NLM_F_ACK_TLVS)) return found;
    std::size_t skip = sizeof(nlmsgerr);
    if (!(nlh->nlmsg_flags & NLM_F_CAPPED)) skip += err->msg.nlmsg_len - sizeof(nlmsghdr);
    mnl_attr_parse(
        nlh, static_cast<unsigned>(skip),
        [](const nlattr* attr, void* data) {
          auto* f = static_cast<ExtAck*>(data);
          if (mnl_attr_get_type(attr) == NLMSGERR_ATTR_MSG) f->message = mnl_attr_get_str(attr);
          if (mnl_attr_get_type(attr) == NLMSGERR_ATTR_OFFS) f->offset = mnl_attr_get_u32(attr);
          return MNL_CB_OK;
        },
        &found);
    return found;
  }

  // Where each attribute nested in the message's top-level attribute `list` starts (a rule's
  // expressions, a set message's elements): the kernel's error offset points into one.
  static std::vector<std::uint32_t> nested_offsets(const nlmsghdr* nlh, std::uint16_t list) {
    struct Walk {
      const nlmsghdr* nlh;
      std::uint16_t list;
      std::vector<std::uint32_t> offsets;
    } walk{nlh, list, {}};
    mnl_attr_parse(
        nlh, sizeof(nfgenmsg),
        [](const nlattr* attr, void* data) {
          if (mnl_attr_get_type(attr) != static_cast<Walk*>(data)->list) return MNL_CB_OK;
          return mnl_attr_parse_nested(
              attr,
              [](const nlattr* element, void* inner) {
                auto* w = static_cast<Walk*>(inner);
                w->offsets.push_back(static_cast<std::uint32_t>(reinterpret_cast<const char*>(element) -
                                                                reinterpret_cast<const char*>(w->nlh)));
                return MNL_CB_OK;
              },
              data);
        },
        &walk);
    return walk.offsets;
  }
  static std::vector<std::uint32_t> expression_offsets(const nlmsghdr* nlh) {
    return nested_offsets(nlh, NFTA_RULE_EXPRESSIONS);
  }

  struct SentRule {
    const Rule* rule;
    std::vector<std::uint32_t> expression_offsets;
  };
  // A message of set elements, kept until the batch's answers are read (its bytes live in the batch).
  struct SentElements {
    const nlmsghdr* nlh;
    const Set* set;
    std::vector<const Element*> elements;  // in the message's order
    std::vector<Element> copies;           // (Kept::copied: what elements points to)

    // The refused element, by where the kernel's error offset points: its place, and the origin of the
    // rule it stands for where it has one (a merged run's element).
    std::string refused(std::uint32_t offset, const Transaction& tx) const {
      const auto offsets = nested_offsets(nlh, NFTA_SET_ELEM_LIST_ELEMENTS);
      std::size_t k = 0;
      while (k + 1 < offsets.size() && k + 1 < elements.size() && offsets[k + 1] <= offset) ++k;
      if (offsets.empty() || offsets[0] > offset || k >= elements.size())
        return "at byte " + std::to_string(offset);
      const std::string& stamp = elements[k]->comment;
      std::string text = "at its element " + element_key_text(*set, *elements[k]);
      if (!stamp.empty())
        text += ", of " + tx.readable(stamp.starts_with(':') ? set->comment + stamp : stamp);
      return text;
    }
  };

  BatchPtr batch_;
  std::uint32_t begin_seq_, seq_;
  std::uint32_t genid_;
  std::uint32_t next_set_id_ = 1;
  struct Described {
    std::string what;
    const std::string* stamp;
  };
  std::map<std::uint32_t, Described> what_;
  const Set* where_ = nullptr;  // the table's `where` set, if it has one
  mutable std::optional<Positions> positions_;

  // A stamp as people read it: with its absolute line.
  std::string readable(std::string_view stamp) const {
    if (!where_) return std::string(stamp);
    if (!positions_) positions_.emplace(*where_);
    return positions_->absolute(stamp);
  }
  std::string describe(std::uint32_t seq) const {
    auto it = what_.find(seq);
    if (it == what_.end()) return "message " + std::to_string(seq);
    const std::string* stamp = it->second.stamp;
    return (stamp && !stamp->empty() ? readable(*stamp) + ": " : "") + it->second.what;
  }
  std::map<std::uint32_t, SentRule> sent_rules_;
  std::map<std::uint32_t, SentElements> sent_elements_;
  BatchNames batch_names_;
};

std::uint32_t first_seq() {
  return static_cast<std::uint32_t>(time(nullptr)) & 0x7fffffff;
}

// Table inet fwengine's flags (NFT_TABLE_F_*), or nothing if it does not exist: GETTABLE answers with
// the table or with ENOENT.
std::optional<std::uint32_t> table_flags(Socket& sock, std::uint32_t seq) {
  char buf[kRequestBuffer];
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETTABLE, NFPROTO_INET, 0, seq);
  TablePtr t(nftnl_table_alloc());
  nftnl_table_set_str(t.get(), NFTNL_TABLE_NAME, kTableName);
  nftnl_table_nlmsg_build_payload(nlh, t.get());
  if (mnl_socket_sendto(sock.get(), nlh, nlh->nlmsg_len) < 0) fail("netlink send failed");
  std::vector<char> reply(1 << 16);
  ssize_t n = mnl_socket_recvfrom(sock.get(), reply.data(), reply.size());
  if (n < 0) fail("netlink receive failed");
  std::uint32_t flags = 0;
  int ret = mnl_cb_run(
      reply.data(), static_cast<std::size_t>(n), seq, sock.portid(),
      [](const nlmsghdr* answer, void* data) {
        TablePtr table(nftnl_table_alloc());
        if (nftnl_table_nlmsg_parse(answer, table.get()) < 0) return MNL_CB_ERROR;
        if (nftnl_table_is_set(table.get(), NFTNL_TABLE_FLAGS))
          *static_cast<std::uint32_t*>(data) = nftnl_table_get_u32(table.get(), NFTNL_TABLE_FLAGS);
        return MNL_CB_OK;
      },
      &flags);
  if (ret >= 0) return flags;
  if (errno == ENOENT) return std::nullopt;
  fail("cannot read table inet fwengine");
}

void list_names(Socket& sock, std::uint32_t seq, Listing& out) {
  char buf[kRequestBuffer];
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETCHAIN, NFPROTO_INET, NLM_F_DUMP, seq);
  ChainPtr chain_filter(nftnl_chain_alloc());
  nftnl_chain_set_str(chain_filter.get(), NFTNL_CHAIN_TABLE, kTableName);
  nftnl_chain_nlmsg_build_payload(nlh, chain_filter.get());
  request(
      sock, nlh,
      [](const nlmsghdr* reply, void* data) {
        ChainPtr chain(nftnl_chain_alloc());
        if (nftnl_chain_nlmsg_parse(reply, chain.get()) < 0) return MNL_CB_ERROR;
        if (std::strcmp(nftnl_chain_get_str(chain.get(), NFTNL_CHAIN_TABLE), kTableName) != 0)
          return MNL_CB_OK;
        ListedChain listed{nftnl_chain_get_str(chain.get(), NFTNL_CHAIN_NAME),
                           nftnl_chain_get_u64(chain.get(), NFTNL_CHAIN_HANDLE),
                           {}};
        if (nftnl_chain_is_set(chain.get(), NFTNL_CHAIN_HOOKNUM))
          listed.hook = Hook{nftnl_chain_get_str(chain.get(), NFTNL_CHAIN_TYPE),
                             nftnl_chain_get_u32(chain.get(), NFTNL_CHAIN_HOOKNUM),
                             nftnl_chain_get_s32(chain.get(), NFTNL_CHAIN_PRIO)};
        if (nftnl_chain_is_set(chain.get(), NFTNL_CHAIN_POLICY))
          listed.policy = nftnl_chain_get_u32(chain.get(), NFTNL_CHAIN_POLICY);
        static_cast<Listing*>(data)->chains.push_back(std::move(listed));
        return MNL_CB_OK;
      },
      &out);
  nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETSET, NFPROTO_INET, NLM_F_DUMP, seq + 1);
  SetPtr set_filter(nftnl_set_alloc());
  nftnl_set_set_str(set_filter.get(), NFTNL_SET_TABLE, kTableName);
  nftnl_set_nlmsg_build_payload(nlh, set_filter.get());
  request(
      sock, nlh,
      [](const nlmsghdr* reply, void* data) {
        auto* listing = static_cast<Listing*>(data);
        SetPtr set(nftnl_set_alloc());
        if (nftnl_set_nlmsg_parse(reply, set.get()) < 0) return MNL_CB_ERROR;
        bool ours = std::strcmp(nftnl_set_get_str(set.get(), NFTNL_SET_TABLE), kTableName) == 0;
        if (!ours || (nftnl_set_get_u32(set.get(), NFTNL_SET_FLAGS) & NFT_SET_ANONYMOUS)) return MNL_CB_OK;
        std::string name = nftnl_set_get_str(set.get(), NFTNL_SET_NAME);
        bool counted = false;
        nftnl_set_expr_foreach(
            set.get(),
            [](nftnl_expr* e, void* flag) {
              if (std::strcmp(nftnl_expr_get_str(e, NFTNL_EXPR_NAME), "counter") == 0)
                *static_cast<bool*>(flag) = true;
              return 0;
            },
            &counted);
        if (counted && nftnl_set_is_set(set.get(), NFTNL_SET_USERDATA)) {
          std::uint32_t len = 0;
          const void* udata = nftnl_set_get_data(set.get(), NFTNL_SET_USERDATA, &len);
          if (auto comment = parse_comment(udata, len, NFTNL_UDATA_SET_COMMENT); !comment.empty())
            listing->set_comments[name] = comment;
        }
        if (counted) listing->counted_sets.push_back(name);
        listing->sets.push_back(std::move(name));
        return MNL_CB_OK;
      },
      &out);
}

// The elements of one named set: their digest into out.set_elements and, for a set with counters
// (`counted`), the comment, packets and bytes of each (end markers left out).
void list_elements(Socket& sock, std::uint32_t seq, const std::string& name, bool counted, Listing& out) {
  std::vector<char> buf(kRequestBuffer);
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf.data(), NFT_MSG_GETSETELEM, NFPROTO_INET, NLM_F_DUMP, seq);
  SetPtr filter(nftnl_set_alloc());
  nftnl_set_set_str(filter.get(), NFTNL_SET_TABLE, kTableName);
  nftnl_set_set_str(filter.get(), NFTNL_SET_NAME, name.c_str());
  nftnl_set_elems_nlmsg_build_payload(nlh, filter.get());
  SetPtr elements(nftnl_set_alloc());
  request(
      sock, nlh,
      [](const nlmsghdr* reply, void* data) {
        return nftnl_set_elems_nlmsg_parse(reply, static_cast<nftnl_set*>(data)) < 0 ? MNL_CB_ERROR
                                                                                     : MNL_CB_OK;
      },
      elements.get());
  struct Walk {
    const std::string* set;
    bool counted;
    bool where;  // the `where` set: its elements are first lines of policies
    Listing* out;
    std::uint64_t content = 0;
  } walk{&name, counted, stable_part(name) == kPositionsSet, &out};
  nftnl_set_elem_foreach(
      elements.get(),
      [](nftnl_set_elem* e, void* data) {
        auto* w = static_cast<Walk*>(data);
        auto bytes = [e](std::uint16_t attribute) {
          std::uint32_t len = 0;
          const auto* at = static_cast<const std::uint8_t*>(nftnl_set_elem_get(e, attribute, &len));
          return nftnl_set_elem_is_set(e, attribute) ? Bytes(at, at + len) : Bytes{};
        };
        // What was sent, in Element's terms (the digest the apply recorded was taken of those).
        Element element{bytes(NFTNL_SET_ELEM_KEY), false, bytes(NFTNL_SET_ELEM_KEY_END), {}};
        element.interval_end = nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_FLAGS) &&
                               (nftnl_set_elem_get_u32(e, NFTNL_SET_ELEM_FLAGS) & NFT_SET_ELEM_INTERVAL_END);
        if (nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_USERDATA)) {
          std::uint32_t len = 0;
          const void* udata = nftnl_set_elem_get(e, NFTNL_SET_ELEM_USERDATA, &len);
          element.comment = parse_comment(udata, len, NFTNL_UDATA_SET_ELEM_COMMENT);
        }
        w->content += element_digest(element);
        if (w->where) {
          const auto* key = reinterpret_cast<const char*>(element.key.data());
          w->out->positions.add(std::string_view(key, std::find(key, key + element.key.size(), '\0') - key),
                                element.comment);
        }
        if (!w->counted || element.interval_end) return 0;
        ListedElement listed{*w->set, std::move(element.comment), 0, 0};
        nftnl_set_elem_expr_foreach(
            e,
            [](nftnl_expr* x, void* arg) {
              auto* l = static_cast<ListedElement*>(arg);
              if (std::strcmp(nftnl_expr_get_str(x, NFTNL_EXPR_NAME), "counter") == 0) {
                l->packets = nftnl_expr_get_u64(x, NFTNL_EXPR_CTR_PACKETS);
                l->bytes = nftnl_expr_get_u64(x, NFTNL_EXPR_CTR_BYTES);
              }
              return 0;
            },
            &listed);
        w->out->elements.push_back(std::move(listed));
        return 0;
      },
      &walk);
  out.set_elements[name] = set_digest(name, walk.content);
}

// A digest of a listed rule's expressions as the kernel encodes them: each one's name and attributes,
// but only the name of a counter (its values change with every packet).
std::uint64_t expressions_digest(const nlmsghdr* rule) {
  std::uint64_t h = kDigestSeed;
  mnl_attr_parse(
      rule, sizeof(nfgenmsg),
      [](const nlattr* attr, void* data) {
        if (mnl_attr_get_type(attr) != NFTA_RULE_EXPRESSIONS) return MNL_CB_OK;
        return mnl_attr_parse_nested(
            attr,
            [](const nlattr* element, void* digest) {
              struct Fields {
                const nlattr* name = nullptr;
                const nlattr* body = nullptr;
              } fields;
              mnl_attr_parse_nested(
                  element,
                  [](const nlattr* field, void* found) {
                    auto* f = static_cast<Fields*>(found);
                    if (mnl_attr_get_type(field) == NFTA_EXPR_NAME) f->name = field;
                    if (mnl_attr_get_type(field) == NFTA_EXPR_DATA) f->body = field;
                    return MNL_CB_OK;
                  },
                  &fields);
              auto& h = *static_cast<std::uint64_t*>(digest);
              const std::string_view kind = fields.name ? mnl_attr_get_str(fields.name) : "";
              h = digest_bytes(h, kind);
              if (fields.body && kind != "counter")
                h = digest_bytes(h,
                                 std::string_view(static_cast<const char*>(mnl_attr_get_payload(fields.body)),
                                                  mnl_attr_get_payload_len(fields.body)));
              return MNL_CB_OK;
            },
            data);
      },
      &h);
  return h;
}

// The rules of our table, or of one chain of it.
void list_rules(Socket& sock, std::uint32_t seq, Listing& out, const std::string& chain = {}) {
  char buf[kRequestBuffer];
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETRULE, NFPROTO_INET, NLM_F_DUMP, seq);
  RulePtr filter(nftnl_rule_alloc());
  nftnl_rule_set_str(filter.get(), NFTNL_RULE_TABLE, kTableName);
  if (!chain.empty()) nftnl_rule_set_str(filter.get(), NFTNL_RULE_CHAIN, chain.c_str());
  nftnl_rule_nlmsg_build_payload(nlh, filter.get());
  request(
      sock, nlh,
      [](const nlmsghdr* reply, void* data) {
        auto* listing = static_cast<Listing*>(data);
        RulePtr rule(nftnl_rule_alloc());
        if (nftnl_rule_nlmsg_parse(reply, rule.get()) < 0) return MNL_CB_ERROR;
        // The kernel filters the dump by table; a rule of another one is never counted as ours.
        if (std::strcmp(nftnl_rule_get_str(rule.get(), NFTNL_RULE_TABLE), kTableName) != 0) return MNL_CB_OK;
        ListedRule listed;
        listed.chain = nftnl_rule_get_str(rule.get(), NFTNL_RULE_CHAIN);
        if (nftnl_rule_is_set(rule.get(), NFTNL_RULE_USERDATA)) {
          std::uint32_t len = 0;
          const void* udata = nftnl_rule_get_data(rule.get(), NFTNL_RULE_USERDATA, &len);
          listed.comment = parse_comment(udata, len, NFTNL_UDATA_RULE_COMMENT);
        }
        nftnl_expr_iter* iter = nftnl_expr_iter_create(rule.get());
        for (nftnl_expr* e = nftnl_expr_iter_next(iter); e; e = nftnl_expr_iter_next(iter)) {
          const char* kind = nftnl_expr_get_str(e, NFTNL_EXPR_NAME);
          if (std::strcmp(kind, "counter") == 0) {
            listed.counted = true;
            listed.packets = nftnl_expr_get_u64(e, NFTNL_EXPR_CTR_PACKETS);
            listed.bytes = nftnl_expr_get_u64(e, NFTNL_EXPR_CTR_BYTES);
          } else if (std::strcmp(kind, "lookup") == 0) {
            listed.lookups.emplace_back(nftnl_expr_get_str(e, NFTNL_EXPR_LOOKUP_SET));
          }
        }
        nftnl_expr_iter_destroy(iter);
        listed.expressions = expressions_digest(reply);
        listed.index = listing->rules.empty() || listing->rules.back().chain != listed.chain
                           ? 0
                           : listing->rules.back().index + 1;
        listing->rules.push_back(std::move(listed));
        return MNL_CB_OK;
      },
      &out);
}

// The names of our table's ct helper objects.
std::set<std::string, std::less<>> list_helpers(Socket& sock, std::uint32_t seq) {
  char buf[kRequestBuffer];
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETOBJ, NFPROTO_INET, NLM_F_DUMP, seq);
  ObjPtr filter(nftnl_obj_alloc());
  nftnl_obj_set_str(filter.get(), NFTNL_OBJ_TABLE, kTableName);
  nftnl_obj_set_u32(filter.get(), NFTNL_OBJ_TYPE, NFT_OBJECT_CT_HELPER);
  nftnl_obj_nlmsg_build_payload(nlh, filter.get());
  std::set<std::string, std::less<>> out;
  request(
      sock, nlh,
      [](const nlmsghdr* reply, void* data) {
        ObjPtr obj(nftnl_obj_alloc());
        if (nftnl_obj_nlmsg_parse(reply, obj.get()) < 0) return MNL_CB_ERROR;
        if (std::strcmp(nftnl_obj_get_str(obj.get(), NFTNL_OBJ_TABLE), kTableName) == 0)
          static_cast<std::set<std::string, std::less<>>*>(data)->emplace(
              nftnl_obj_get_str(obj.get(), NFTNL_OBJ_NAME));
        return MNL_CB_OK;
      },
      &out);
  return out;
}

using ChainRules = std::map<std::string, std::uint64_t, std::less<>>;  // ContentRecord::rules

// A rule's comment counts too: one edited by hand is a changed rule, which the next apply puts back.
std::uint64_t rule_share(const ListedRule& rule) {
  return digest_bytes(digest_bytes(digest_bytes(rule.expressions, rule.chain), std::to_string(rule.index)),
                      rule.comment);
}

// Each chain's share of Listing::content from its rules (0 for a chain without any).
ChainRules rule_shares(const std::vector<ListedChain>& chains, const std::vector<ListedRule>& rules) {
  ChainRules out;
  for (const auto& chain : chains) out.emplace(chain.name, 0);
  for (const auto& rule : rules) out[rule.chain] += rule_share(rule);
  return out;
}

// Listing::content of the chains listed, given their rules' shares. Summed per rule and chain: the kernel
// lists chains in creation order, which incremental applies change.
std::string content_of(const std::vector<ListedChain>& chains, const ChainRules& rules) {
  std::uint64_t sum = 0;
  for (const auto& chain : chains)
    if (chain.hook)
      sum += digest_bytes(
          kDigestSeed, chain.name + ' ' + chain.hook->type + ' ' + std::to_string(chain.hook->hooknum) + ' ' +
                           std::to_string(chain.hook->priority) + ' ' + std::to_string(chain.policy));
  for (const auto& [chain, digest] : rules) sum += digest;
  return hex16(sum);
}

std::string content_digest(const Listing& listing) {
  return content_of(listing.chains, rule_shares(listing.chains, listing.rules));
}

// Whether a rule of the chain jumps to (or goes to) a chain `unknown` says yes to.
template <class Unknown>
bool jumps_to(const Chain& chain, Unknown unknown) {
  for (const auto& rule : chain.rules)
    for (const auto& expr : rule.exprs)
      if (expr.kind == Expr::Kind::verdict && !expr.text.empty() && unknown(expr.text)) return true;
  return false;
}

// The rules' share of each listed chain as the kernel lists it now, after an apply of `table`. With
// `before`, the record of what the kernel held when that apply trusted it, the chains the apply left
// alone keep their share: those of the same name whose rules jump to no chain the record lacks (the
// kernel lists a jump by the name its target has now, and a changed chain is renamed). The others are
// listed one by one, or all at once when they are most.
ChainRules rules_now(Socket& sock, const std::vector<ListedChain>& chains, const Table& table,
                     const ContentRecord* before) {
  ChainRules out;
  std::vector<std::string> stale;
  if (before) {
    for (const auto& chain : chains)
      if (auto it = before->rules.find(chain.name); it != before->rules.end())
        out.emplace(chain.name, it->second);
      else
        stale.push_back(chain.name);
    auto unknown = [before](std::string_view name) { return !before->rules.contains(name); };
    for (const auto& chain : table.chains)
      if (out.contains(chain.name) && jumps_to(chain, unknown)) {
        out.erase(chain.name);
        stale.push_back(chain.name);
      }
  }
  if (!before || stale.size() * 2 > chains.size()) {
    Listing all;
    list_rules(sock, first_seq() + 2, all);
    return rule_shares(chains, all.rules);
  }
  for (std::size_t i = 0; i < stale.size(); ++i) {
    Listing one;
    list_rules(sock, first_seq() + 2 + static_cast<std::uint32_t>(i), one, stale[i]);
    std::uint64_t& share = out[stale[i]];
    for (const auto& rule : one.rules) share += rule_share(rule);
  }
  return out;
}

// Before retry `attempt` (1, 2, ...): 0.5 ms doubling to 16 ms, so that a writer in a loop lets a gap by.
void back_off(int attempt) {
  std::this_thread::sleep_for(std::chrono::microseconds(500) * (1 << std::min(attempt - 1, 5)));
}

// Runs fill(tx, sock) against the current generation; rebuilds and resends when it moved meanwhile.
// Returns how long the committed batch took, from sending it to its last answer (ms).
template <class Fill>
Committed run_transaction(Socket& sock, Fill fill) {
  for (int attempt = 0;; ++attempt) {
    if (attempt > 0) back_off(attempt);
    std::uint32_t seq = first_seq();
    const std::uint32_t genid = generation(sock, seq);
    Transaction tx(seq + 1, genid);
    try {
      fill(tx, sock);
    } catch (const DumpInterrupted&) {  // the batch would be refused as well: start again
      if (attempt + 1 == kGenidRetries) throw;
      continue;
    }
    const auto start = std::chrono::steady_clock::now();
    if (tx.commit(sock))
      return {std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count(),
              tx.empty() ? genid : genid + 1};
    if (attempt + 1 == kGenidRetries)
      throw RuntimeError("nft: the ruleset kept changing under us; try again");
  }
}

// present: whether the table is there (as listed after the transaction's generation was read). Only then
// is it deleted: a commit that deletes leaves the kernel objects to free after an RCU grace period, and
// the process that closes its netlink socket next waits for that (tens of ms here).
void fill_replace(Transaction& tx, const Table& table, const std::string& marker, bool present) {
  tx.explain_stamps_with(table);
  if (present) {
    tx.table(NFT_MSG_NEWTABLE, NLM_F_CREATE);
    tx.table(NFT_MSG_DELTABLE, 0);
  }
  tx.table(NFT_MSG_NEWTABLE, NLM_F_CREATE);
  for (const auto& helper : table.helpers) tx.helper(helper);
  for (const auto& set : table.sets) tx.set(set, tx.named_set_id(), "set " + set.name);
  for (const auto& chain : table.chains) tx.chain(chain);
  if (!marker.empty()) tx.chain({marker, {}, {}});
  for (const auto& chain : table.chains)
    for (std::size_t i = 0; i < chain.rules.size(); ++i) tx.rule(chain.rules[i], chain.name, i);
}

bool same_hook(const std::optional<Hook>& a, const std::optional<Hook>& b) {
  if (!a || !b) return !a && !b;
  return a->type == b->type && a->hooknum == b->hooknum && a->priority == b->priority;
}

}  // namespace

Committed apply_table(Connection& connection, const Table& table, const std::string& marker) {
  return run_transaction(connection.socket(), [&](Transaction& tx, Socket& sock) {
    fill_replace(tx, table, marker, table_flags(sock, first_seq()).has_value());
  });
}

Committed apply_table_incremental(Connection& connection, const Table& table, const std::string& marker,
                                  const AppliedSets* previous, const ContentRecord* record) {
  bool from_record = false;
  Committed committed = run_transaction(connection.socket(), [&](Transaction& tx, Socket& sock) {
    from_record = false;
    tx.explain_stamps_with(table);
    // Listed after the generation was read: a change in between makes the kernel refuse the batch.
    // A dormant table (switched off by `nft add table ... { flags dormant; }`) hooks nothing: only a
    // new table is sure to be live.
    const auto flags = table_flags(sock, first_seq());
    if (!flags || (*flags & NFT_TABLE_F_DORMANT)) return fill_replace(tx, table, marker, flags.has_value());
    Listing kernel;
    list_names(sock, first_seq(), kernel);
    // Nothing committed since the content was recorded: what it says still holds, unlisted.
    const bool trusted =
        record && record->generation == tx.generation() &&
        std::any_of(kernel.chains.begin(), kernel.chains.end(),
                    [record](const ListedChain& chain) { return chain.name == record->chain; });
    if (!trusted) {
      list_rules(sock, first_seq() + 2, kernel);
      // A chain's name promises its content: where a rule was edited by hand since the last apply (the
      // content it recorded differs), or no content was recorded to tell, no chain can be trusted by name.
      bool checked = false;
      for (const auto& chain : kernel.chains)
        if (auto [base, content] = split_marker(chain.name); !content.empty()) {
          if (content.substr(0, 16) != content_digest(kernel)) return fill_replace(tx, table, marker, true);
          checked = true;
        }
      if (!checked) return fill_replace(tx, table, marker, true);
    }
    std::set<std::string, std::less<>> want_chains, want_sets;
    for (const auto& chain : table.chains) want_chains.insert(chain.name);
    for (const auto& set : table.sets) want_sets.insert(set.name);
    if (!marker.empty()) want_chains.insert(marker);
    // Kernel chains that are no longer wanted under their names, by stable part: rename candidates. A
    // marker chain counts by the marker it stands for, without the content recorded in its name.
    std::map<std::string_view, const ListedChain*> outdated;
    std::set<std::string, std::less<>> have_chains;
    for (const auto& chain : kernel.chains) {
      const std::string_view name = split_marker(chain.name).first;
      have_chains.emplace(name);
      if (!want_chains.contains(name)) outdated.emplace(stable_part(chain.name), &chain);
    }
    std::set<std::string> have_sets(kernel.sets.begin(), kernel.sets.end());
    // A set the kernel has is patched from the record of the apply that loaded it. Without a record
    // of what the kernel holds, only a full replace is sure to reach the wanted state.
    const bool recorded = previous && have_chains.count(previous->marker());
    std::vector<std::pair<const Set*, SetDelta>> patches;
    for (const auto& set : table.sets) {
      if (!have_sets.count(set.name)) continue;
      if (!recorded || !previous->has(set.name)) return fill_replace(tx, table, marker, true);
      if (previous->same(set)) continue;
      auto delta = previous->delta(set);
      if (!delta) return fill_replace(tx, table, marker, true);
      patches.emplace_back(&set, std::move(*delta));
    }
    // Set only past every fill_replace above: a replace trusted nothing.
    from_record = trusted;
    // Helper objects are only ever added here (a full apply drops those no rule uses any more). Only the
    // new ones are sent: the kernel takes one it has without a change, so a batch of such would leave
    // the generation where it was, and Committed would count a commit that never happened.
    const auto have_helpers = list_helpers(sock, first_seq() + 4);
    for (const auto& helper : table.helpers)
      if (!have_helpers.contains(helper.name)) tx.helper(helper);
    if (!marker.empty() && !have_chains.count(marker)) tx.chain({marker, {}, {}});
    for (const auto& set : table.sets)
      if (!have_sets.count(set.name)) tx.set(set, tx.named_set_id(), "set " + set.name);
    for (const auto& [set, delta] : patches) tx.patch(*set, delta);
    std::vector<const Chain*> fill;
    std::set<std::string> reused;
    for (const auto& chain : table.chains) {
      if (have_chains.count(chain.name)) continue;
      fill.push_back(&chain);
      auto old = outdated.find(stable_part(chain.name));
      if (old != outdated.end() && same_hook(old->second->hook, chain.hook)) {
        tx.rename_chain(old->second->handle, old->second->name, chain.name);
        tx.flush_chain(chain.name);
        reused.insert(old->second->name);
        outdated.erase(old);
      } else {
        tx.chain(chain);
      }
    }
    for (const Chain* chain : fill)
      for (std::size_t i = 0; i < chain->rules.size(); ++i) tx.rule(chain->rules[i], chain->name, i);
    // What is gone: empty every such chain first, so that none is still jumped to when deleted.
    std::vector<std::string> gone;
    for (const auto& chain : kernel.chains)
      if (!want_chains.contains(split_marker(chain.name).first) && !reused.count(chain.name))
        gone.push_back(chain.name);
    for (const auto& name : gone) tx.flush_chain(name);
    for (const auto& name : gone) tx.delete_chain(name);
    for (const auto& name : kernel.sets)
      if (!want_sets.count(name)) tx.delete_set(name);
  });
  committed.from_record = from_record;
  return committed;
}

std::pair<std::string_view, std::string_view> split_marker(std::string_view chain_name) {
  if (!chain_name.starts_with(kMarkerPrefix)) return {chain_name, {}};
  const std::string_view fields = chain_name.substr(kMarkerPrefix.size());
  if (std::count(fields.begin(), fields.end(), '-') != 3) return {chain_name, {}};
  const auto dash = chain_name.rfind('-');
  return {chain_name.substr(0, dash), chain_name.substr(dash + 1)};
}

std::optional<ContentRecord> record_content(Connection& connection, const std::string& marker,
                                            std::uint64_t set_elements, const Committed& applied,
                                            const Table& table, const ContentRecord* before) {
  std::optional<ContentRecord> record;
  const Committed committed = run_transaction(connection.socket(), [&](Transaction& tx, Socket& sock) {
    record.reset();
    if (tx.generation() != applied.generation) return;
    Listing kernel;
    list_names(sock, first_seq(), kernel);
    ChainRules rules = rules_now(sock, kernel.chains, table, applied.from_record ? before : nullptr);
    const std::string recorded = marker + '-' + content_of(kernel.chains, rules) + hex16(set_elements);
    record.emplace(ContentRecord{0, recorded, std::move(rules)});
    const ListedChain* outdated = nullptr;  // a record of this marker with other content
    for (const auto& chain : kernel.chains) {
      if (chain.name == recorded) return;
      if (auto [base, content] = split_marker(chain.name); base == marker && !content.empty())
        outdated = &chain;
    }
    // A new chain rather than the marker renamed: a rename, like a deletion, leaves the kernel an
    // object to free after an RCU grace period, which closing the socket then waits for.
    if (outdated) {
      tx.rename_chain(outdated->handle, outdated->name, recorded);
      record->rules.erase(outdated->name);
    } else {
      tx.chain({recorded, {}, {}});
    }
    record->rules.emplace(recorded, 0);  // no rules: the content does not change
  });
  if (record) record->generation = committed.generation;
  return record;
}

void delete_table(Connection& connection) {
  run_transaction(connection.socket(), [](Transaction& tx, Socket& sock) {
    if (!table_flags(sock, first_seq())) return;  // a batch that deletes leaves a grace period to wait for
    tx.table(NFT_MSG_NEWTABLE, NLM_F_CREATE);
    tx.table(NFT_MSG_DELTABLE, 0);
  });
}

std::uint64_t set_elements_digest(const Table& table) {
  std::uint64_t sum = 0;
  for (const auto& set : table.sets)
    if (!set.anonymous) sum += set_digest(set.name, set.content);
  return sum;
}

std::string hex16(std::uint64_t value) {
  char out[24];
  std::snprintf(out, sizeof out, "%016llx", static_cast<unsigned long long>(value));
  return out;
}

namespace {
Listing list_table_once(Connection& connection, Elements elements) {
  Socket& sock = connection.socket();
  Listing out;
  std::uint32_t seq = first_seq();
  const auto flags = table_flags(sock, seq);
  out.present = flags.has_value();
  if (!out.present) return out;
  out.dormant = (*flags & NFT_TABLE_F_DORMANT) != 0;
  list_names(sock, seq + 1, out);
  list_rules(sock, seq + 3, out);
  out.content = content_digest(out);
  for (std::size_t i = 0; i < out.sets.size(); ++i) {
    const bool counted =
        std::find(out.counted_sets.begin(), out.counted_sets.end(), out.sets[i]) != out.counted_sets.end();
    if (counted || stable_part(out.sets[i]) == kPositionsSet || elements == Elements::all)
      list_elements(sock, seq + 4 + static_cast<std::uint32_t>(i), out.sets[i], counted, out);
  }
  return out;
}
}  // namespace

Listing list_table(Connection& connection, Elements elements) {
  for (int attempt = 1;; ++attempt) {
    try {
      return list_table_once(connection, elements);
    } catch (const DumpInterrupted&) {
      if (attempt == kGenidRetries) throw;
      back_off(attempt);
    }
  }
}

std::map<std::string, std::uint64_t, std::less<>> rules_by_chain(const Listing& listing) {
  return rule_shares(listing.chains, listing.rules);
}

std::string rules_digest(Stamps chain_and_comment, const Stamps& set_and_comment) {
  // The kernel lists chains in creation order, which incremental applies change: sort by chain.
  std::stable_sort(chain_and_comment.begin(), chain_and_comment.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::uint64_t h = kDigestSeed;
  for (const auto& [chain, comment] : chain_and_comment) h = digest_bytes(digest_bytes(h, chain), comment);
  // A hash set lists its elements in its own order: their hashes are summed, in no order.
  std::uint64_t elements = 0;
  for (const auto& [set, comment] : set_and_comment)
    elements += digest_bytes(digest_bytes(kDigestSeed, set), comment);
  h = (h ^ elements) * 1099511628211ull;
  return hex16(h);
}

std::string bytecode(const Rule& rule, const std::string& chain) {
  std::vector<std::uint32_t> anon_ids;
  for (std::size_t i = 0; i < rule.anon_sets.size(); ++i)
    anon_ids.push_back(static_cast<std::uint32_t>(i + 1));
  RulePtr r = build_rule(rule, chain, anon_ids);
  std::string out;
  nftnl_expr_iter* iter = nftnl_expr_iter_create(r.get());
  for (nftnl_expr* e = nftnl_expr_iter_next(iter); e; e = nftnl_expr_iter_next(iter)) {
    char buf[512];
    nftnl_expr_snprintf(buf, sizeof buf, e, NFTNL_OUTPUT_DEFAULT, 0);
    out += std::string("[ ") + nftnl_expr_get_str(e, NFTNL_EXPR_NAME) + " " + buf + "]\n";
  }
  nftnl_expr_iter_destroy(iter);
  return out;
}

}  // namespace fwe::nft
