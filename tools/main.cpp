// The `ssm` binary: one subcommand per tools/cmd_*.cpp.
#include <cstdio>
#include <exception>
#include <map>

#include "command.h"
#include "ssm/base.h"

namespace ssm::tools {

std::vector<CommandInfo>& registry() {
  static std::vector<CommandInfo> r;
  return r;
}

Command::Command(std::string name, std::string help, Setup setup) {
  registry().push_back({std::move(name), std::move(help), std::move(setup)});
}

}  // namespace ssm::tools

int main(int argc, char** argv) {
  using namespace ssm::tools;
  CLI::App app{"ssm — selective state space models (Mamba-1/2/3) in C++: run, train, benchmark"};
  app.set_version_flag("--version", std::string("ssm ") + SSM_VERSION);
  app.require_subcommand(0, 1);
  app.fallthrough();  // -t is accepted after the subcommand too, as in `ssm generate ... -t 2`
  int threads = 0;
  app.add_option("-t,--threads", threads, "CPU threads (default: $SSM_THREADS or all cores)")
      ->envname("SSM_THREADS")
      ->check(CLI::Range(1, 1024));
  std::map<std::string, Action> actions;
  std::map<std::string, CLI::App*> subs;
  for (auto& c : registry()) {
    CLI::App* sub = app.add_subcommand(c.name, c.help);
    subs[c.name] = sub;
    actions[c.name] = c.setup(*sub);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);  // prints the message and the usage hint
    return 1;
  }
  try {
    if (threads > 0) ssm::set_num_threads(threads);
    for (auto& [name, sub] : subs)
      if (sub->parsed()) return actions[name]();
    // No subcommand: run the default job (generate from the embedded model) if it exists.
    if (actions.count("generate")) return actions["generate"]();
    std::fputs(app.help().c_str(), stdout);
    return 0;
  } catch (const ssm::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
