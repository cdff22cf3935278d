// Apollo Server or GraphQL Yoga serving the peers schema (bench/peers.py).
//   node bench/peers/server.mjs apollo|yoga PORT
// Data and resolvers mirror library.py.
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { GraphQLScalarType } from "graphql";

const [, , which, port] = process.argv;
const typeDefs = "type Query\n" + readFileSync(new URL("./schema.graphql", import.meta.url), "utf8");
const KINDS = ["NOVEL", "POETRY", "ESSAY"];
const AUTHORS = Array.from({ length: 20 }, (_, i) => ({ id: String(i), name: `Author ${i}` }));
const BOOKS = Array.from({ length: 200 }, (_, i) => ({
  id: String(i), title: `Book ${i}`, author_id: i % 20, year: 1900 + (i % 120), price: (i * 137) % 10000, kind: KINDS[i % 3],
}));
const BY_AUTHOR = Object.fromEntries(AUTHORS.map((a) => [a.id, BOOKS.filter((b) => b.author_id === Number(a.id))]));

const resolvers = {
  Money: new GraphQLScalarType({
    name: "Money",
    serialize: (v) => `${Math.floor(v / 100)}.${String(v % 100).padStart(2, "0")}`,
    parseValue: (v) => Number(v),
    parseLiteral: (ast) => Number(ast.value),
  }),
  Query: {
    books: async (_, { first }) => BOOKS.slice(0, first ?? 20),
    search: async (_, { first }) => Array.from({ length: first ?? 10 }, (_, i) => (i % 2 ? { ...BOOKS[i], _typename: "Book" } : { ...AUTHORS[i % 20], _typename: "Author" })),
    node: async (_, { id }) => (id.startsWith("a") ? { ...AUTHORS[Number(id.slice(1)) % 20], _typename: "Author" } : { ...BOOKS[Number(id) % 200], _typename: "Book" }),
  },
  Book: { author: async (b) => AUTHORS[b.author_id] },
  Author: { books: async (a) => BY_AUTHOR[a.id] },
  Node: { __resolveType: (o) => o._typename },
  SearchResult: { __resolveType: (o) => o._typename },
};

if (which === "apollo") {
  const { ApolloServer } = await import("@apollo/server");
  const { startStandaloneServer } = await import("@apollo/server/standalone");
  const server = new ApolloServer({ typeDefs, resolvers });
  await startStandaloneServer(server, { listen: { port: Number(port), host: "127.0.0.1" } });
} else if (which === "yoga") {
  const { createYoga, createSchema } = await import("graphql-yoga");
  const yoga = createYoga({ schema: createSchema({ typeDefs, resolvers }), graphqlEndpoint: "/graphql", logging: false, graphiql: false, landingPage: false });
  createServer(yoga).listen(Number(port), "127.0.0.1");
} else {
  console.error("usage: node server.mjs apollo|yoga PORT");
  process.exit(2);
}
