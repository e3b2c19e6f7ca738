/* Subcommands of the `ag` tool that live in their own files. Each receives argv from its
 * own name on and returns the exit status (0 ok, 1 failure, 2 usage error). */
#ifndef AG_TOOLS_COMMANDS_H
#define AG_TOOLS_COMMANDS_H

/* `ag bench`: ops, training steps and overhead per op on each backend, beside hardware
 * references and PyTorch; table, CSV, JSON and PNG. */
int ag_cmd_bench(int argc, char **argv);
/* `ag check`: forward, gradcheck and gradgradcheck of plugin ops on every backend. */
int ag_cmd_check(int argc, char **argv);
/* `ag overhead`: framework overhead per tiny op, forward and forward+backward. */
int ag_cmd_overhead(int argc, char **argv);
/* `ag train`: trains the seed's §P MLP on Fashion-MNIST, evaluates checkpoints, times steps. */
int ag_cmd_train(int argc, char **argv);

#endif
