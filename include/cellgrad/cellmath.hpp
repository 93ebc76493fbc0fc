// The scalar language a cell's per-element math is written in (see pointwise.hpp).
//
// pointwise() calls the user's generic function once with symbols Arg<0>, Arg<1>, ...; every
// operation on them returns an expression whose *type* spells the computation, e.g.
// Binary<Mul, Unary<Sigmoid, Arg<1>>, Arg<4>> for sigmoid(a_f) * c. evaluate() computes an
// expression's value from the arguments' values and backprop() adds its gradient into theirs by
// walking the expression in reverse (reverse-mode AD resolved at compile time): both are
// straight-line code that the compiler inlines into one loop over a row and vectorises.
// Expressions are plain data (constants are stored in them), so a node can keep its own copy.
#pragma once

#include <array>
#include <cstddef>
#include <type_traits>

#include "cellgrad/detail/fast_math.hpp"

#if defined(__GNUC__)
#define CELLGRAD_ALWAYS_INLINE [[gnu::always_inline]] inline
#else
#define CELLGRAD_ALWAYS_INLINE inline
#endif

namespace cellgrad::cellmath {

/// The k-th argument of the math.
template <std::size_t K>
struct Arg {};
/// A number written in the math (1 - z, 0.5 * x); kept as double, used in the node's precision.
struct Constant {
    double value;
};
/// op(a).
template <class Op, class A>
struct Unary {
    A a;
};
/// op(a, b).
template <class Op, class A, class B>
struct Binary {
    A a;
    B b;
};
/// An intermediate the cell names (a gate), so that inspectors can show it; its value is a's.
template <class A>
struct Named {
    const char* name;
    A a;
};

/// The operation tag of a Unary or Binary.
template <class E>
struct op_of;
template <class Op, class A>
struct op_of<Unary<Op, A>> {
    using type = Op;
};
template <class Op, class A, class B>
struct op_of<Binary<Op, A, B>> {
    using type = Op;
};

template <class E>
struct is_expression : std::false_type {};
template <std::size_t K>
struct is_expression<Arg<K>> : std::true_type {};
template <>
struct is_expression<Constant> : std::true_type {};
template <class Op, class A>
struct is_expression<Unary<Op, A>> : std::true_type {};
template <class Op, class A, class B>
struct is_expression<Binary<Op, A, B>> : std::true_type {};
template <class A>
struct is_expression<Named<A>> : std::true_type {};

/// A symbolic value of the math.
template <class E>
concept Expression = is_expression<std::remove_cvref_t<E>>::value;
/// An expression or a plain number.
template <class E>
concept Term = Expression<E> || std::is_arithmetic_v<std::remove_cvref_t<E>>;

/// The expression for a term: numbers become Constants.
template <Term E>
constexpr auto lift(const E& e) {
    if constexpr (Expression<E>) {
        return e;
    } else {
        return Constant{static_cast<double>(e)};
    }
}

// ---- operations: value, and the derivative from the input x and the value y -------------------

/// y = 1 / (1 + e^-x); dy/dx = y (1 - y).
struct Sigmoid {
    template <class T>
    CELLGRAD_ALWAYS_INLINE static T value(T x) {
        return fast_math::sigmoid<T>(x);
    }
    template <class T>
    CELLGRAD_ALWAYS_INLINE static T derivative(T, T y) {
        return y * (T(1) - y);
    }
};
/// y = tanh x; dy/dx = 1 - y^2.
struct Tanh {
    template <class T>
    CELLGRAD_ALWAYS_INLINE static T value(T x) {
        return fast_math::tanh<T>(x);
    }
    template <class T>
    CELLGRAD_ALWAYS_INLINE static T derivative(T, T y) {
        return T(1) - y * y;
    }
};
/// y = e^x; dy/dx = y.
struct Exp {
    template <class T>
    CELLGRAD_ALWAYS_INLINE static T value(T x) {
        return fast_math::exp<T>(x);
    }
    template <class T>
    CELLGRAD_ALWAYS_INLINE static T derivative(T, T y) {
        return y;
    }
};
/// y = max(x, 0); dy/dx = [x > 0].
struct Relu {
    template <class T>
    CELLGRAD_ALWAYS_INLINE static T value(T x) {
        return x > T(0) ? x : T(0);
    }
    template <class T>
    CELLGRAD_ALWAYS_INLINE static T derivative(T x, T) {
        return x > T(0) ? T(1) : T(0);
    }
};
/// y = -x; dy/dx = -1.
struct Negate {
    template <class T>
    CELLGRAD_ALWAYS_INLINE static T value(T x) {
        return -x;
    }
    template <class T>
    CELLGRAD_ALWAYS_INLINE static T derivative(T, T) {
        return T(-1);
    }
};
/// y = a + b; partials 1, 1.
struct Add {
    template <class T>
    CELLGRAD_ALWAYS_INLINE static T value(T a, T b) {
        return a + b;
    }
    template <class T>
    CELLGRAD_ALWAYS_INLINE static std::array<T, 2> partials(T, T) {
        return {T(1), T(1)};
    }
};
/// y = a - b; partials 1, -1.
struct Subtract {
    template <class T>
    CELLGRAD_ALWAYS_INLINE static T value(T a, T b) {
        return a - b;
    }
    template <class T>
    CELLGRAD_ALWAYS_INLINE static std::array<T, 2> partials(T, T) {
        return {T(1), T(-1)};
    }
};
/// y = a b; partials b, a.
struct Multiply {
    template <class T>
    CELLGRAD_ALWAYS_INLINE static T value(T a, T b) {
        return a * b;
    }
    template <class T>
    CELLGRAD_ALWAYS_INLINE static std::array<T, 2> partials(T a, T b) {
        return {b, a};
    }
};
/// y = a / b; partials 1/b, -a/b^2.
struct Divide {
    template <class T>
    CELLGRAD_ALWAYS_INLINE static T value(T a, T b) {
        return a / b;
    }
    template <class T>
    CELLGRAD_ALWAYS_INLINE static std::array<T, 2> partials(T a, T b) {
        return {T(1) / b, -a / (b * b)};
    }
};

// ---- the functions a cell's math calls ----------------------------------------------------------

/// Logistic sigmoid of an expression.
template <Expression E>
constexpr auto sigmoid(const E& e) {
    return Unary<Sigmoid, E>{e};
}
/// tanh of an expression.
template <Expression E>
constexpr auto tanh(const E& e) {
    return Unary<Tanh, E>{e};
}
/// e^x of an expression.
template <Expression E>
constexpr auto exp(const E& e) {
    return Unary<Exp, E>{e};
}
/// max(x, 0) of an expression.
template <Expression E>
constexpr auto relu(const E& e) {
    return Unary<Relu, E>{e};
}
/// Marks an intermediate with a name (a gate) without changing its value.
template <Expression E>
constexpr auto named(const char* name, const E& e) {
    return Named<E>{name, e};
}
/// -e.
template <Expression E>
constexpr auto operator-(const E& e) {
    return Unary<Negate, E>{e};
}
/// a + b.
template <Term A, Term B>
requires(Expression<A> || Expression<B>) constexpr auto operator+(const A& a, const B& b) {
    return Binary<Add, decltype(lift(a)), decltype(lift(b))>{lift(a), lift(b)};
}
/// a - b.
template <Term A, Term B>
requires(Expression<A> || Expression<B>) constexpr auto operator-(const A& a, const B& b) {
    return Binary<Subtract, decltype(lift(a)), decltype(lift(b))>{lift(a), lift(b)};
}
/// a * b.
template <Term A, Term B>
requires(Expression<A> || Expression<B>) constexpr auto operator*(const A& a, const B& b) {
    return Binary<Multiply, decltype(lift(a)), decltype(lift(b))>{lift(a), lift(b)};
}
/// a / b.
template <Term A, Term B>
requires(Expression<A> || Expression<B>) constexpr auto operator/(const A& a, const B& b) {
    return Binary<Divide, decltype(lift(a)), decltype(lift(b))>{lift(a), lift(b)};
}

// ---- evaluation and reverse sweep ---------------------------------------------------------------

/// The expression's value for argument values x.
template <class T, std::size_t N, std::size_t K>
CELLGRAD_ALWAYS_INLINE T evaluate(const Arg<K>&, const std::array<T, N>& x) {
    static_assert(K < N, "the math reads an argument it was not given");
    return x[K];
}
template <class T, std::size_t N>
CELLGRAD_ALWAYS_INLINE T evaluate(const Constant& e, const std::array<T, N>&) {
    return static_cast<T>(e.value);
}
template <class T, std::size_t N, class Op, class A>
CELLGRAD_ALWAYS_INLINE T evaluate(const Unary<Op, A>& e, const std::array<T, N>& x) {
    return Op::value(evaluate(e.a, x));
}
template <class T, std::size_t N, class Op, class A, class B>
CELLGRAD_ALWAYS_INLINE T evaluate(const Binary<Op, A, B>& e, const std::array<T, N>& x) {
    return Op::value(evaluate(e.a, x), evaluate(e.b, x));
}
template <class T, std::size_t N, class A>
CELLGRAD_ALWAYS_INLINE T evaluate(const Named<A>& e, const std::array<T, N>& x) {
    return evaluate(e.a, x);
}

/// Adds g * d(expression)/dx_k into dx[k] for every argument k (the reverse sweep).
template <class T, std::size_t N, std::size_t K>
CELLGRAD_ALWAYS_INLINE void backprop(const Arg<K>&, T g, const std::array<T, N>&,
                                     std::array<T, N>& dx) {
    dx[K] += g;
}
template <class T, std::size_t N>
CELLGRAD_ALWAYS_INLINE void backprop(const Constant&, T, const std::array<T, N>&,
                                     std::array<T, N>&) {}
template <class T, std::size_t N, class Op, class A>
CELLGRAD_ALWAYS_INLINE void backprop(const Unary<Op, A>& e, T g, const std::array<T, N>& x,
                                     std::array<T, N>& dx) {
    const T in = evaluate(e.a, x);
    backprop(e.a, g * Op::derivative(in, Op::value(in)), x, dx);
}
template <class T, std::size_t N, class Op, class A, class B>
CELLGRAD_ALWAYS_INLINE void backprop(const Binary<Op, A, B>& e, T g, const std::array<T, N>& x,
                                     std::array<T, N>& dx) {
    const std::array<T, 2> d = Op::partials(evaluate(e.a, x), evaluate(e.b, x));
    backprop(e.a, g * d[0], x, dx);
    backprop(e.b, g * d[1], x, dx);
}
template <class T, std::size_t N, class A>
CELLGRAD_ALWAYS_INLINE void backprop(const Named<A>& e, T g, const std::array<T, N>& x,
                                     std::array<T, N>& dx) {
    backprop(e.a, g, x, dx);
}

/// Number of operations and leaves in an expression.
template <class E>
struct size_of : std::integral_constant<std::size_t, 1> {};
template <class Op, class A>
struct size_of<Unary<Op, A>> : std::integral_constant<std::size_t, 1 + size_of<A>::value> {};
template <class Op, class A, class B>
struct size_of<Binary<Op, A, B>>
    : std::integral_constant<std::size_t, 1 + size_of<A>::value + size_of<B>::value> {};
template <class A>
struct size_of<Named<A>> : std::integral_constant<std::size_t, size_of<A>::value> {};

/// e with every subexpression of type S replaced by the argument Arg<L> (an output of the same
/// node standing for itself inside another output).
template <class S, std::size_t L, class E>
constexpr auto substitute(const E& e) {
    if constexpr (std::is_same_v<E, S>) {
        return Arg<L>{};
    } else if constexpr (requires { e.b; }) {
        auto a = substitute<S, L>(e.a);
        auto b = substitute<S, L>(e.b);
        return Binary<typename op_of<E>::type, decltype(a), decltype(b)>{a, b};
    } else if constexpr (requires { e.name; }) {
        auto a = substitute<S, L>(e.a);
        return Named<decltype(a)>{e.name, a};
    } else if constexpr (requires { e.a; }) {
        auto a = substitute<S, L>(e.a);
        return Unary<typename op_of<E>::type, decltype(a)>{a};
    } else {
        return e;
    }
}

/// Structural equality: same constants and names (the types are equal).
template <class E>
bool equal(const E& x, const E& y) {
    if constexpr (std::is_same_v<E, Constant>) {
        return x.value == y.value;
    } else if constexpr (requires { x.b; }) {
        return equal(x.a, y.a) && equal(x.b, y.b);
    } else if constexpr (requires { x.name; }) {
        return x.name == y.name && equal(x.a, y.a);
    } else if constexpr (requires { x.a; }) {
        return equal(x.a, y.a);
    } else {
        return true;
    }
}

/// True when every subexpression of e of type S holds the same constants and names as s.
template <class S, class E>
bool matches_agree(const E& e, const S& s) {
    if constexpr (std::is_same_v<E, S>) {
        return equal(e, s);
    } else if constexpr (requires { e.b; }) {
        return matches_agree(e.a, s) && matches_agree(e.b, s);
    } else if constexpr (requires { e.a; }) {
        return matches_agree(e.a, s);
    } else {
        return true;
    }
}

/// Calls visit(name, expression) for every Named intermediate, outermost first (a name met twice
/// is visited twice).
template <class Visit, std::size_t K>
void for_each_named(const Arg<K>&, const Visit&) {}
template <class Visit>
void for_each_named(const Constant&, const Visit&) {}
template <class Visit, class Op, class A>
void for_each_named(const Unary<Op, A>& e, const Visit& visit) {
    for_each_named(e.a, visit);
}
template <class Visit, class Op, class A, class B>
void for_each_named(const Binary<Op, A, B>& e, const Visit& visit) {
    for_each_named(e.a, visit);
    for_each_named(e.b, visit);
}
template <class Visit, class A>
void for_each_named(const Named<A>& e, const Visit& visit) {
    visit(e.name, e.a);
    for_each_named(e.a, visit);
}

} // namespace cellgrad::cellmath
